//! Everything the command prints goes through here: tables, counts with
//! their noun, server text made safe for a terminal line, dates, JSON.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context as _;

/// Writes `text` to standard output, all of it or an error.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to standard output")
}

/// A command's answer: `value` as JSON with `--json`, else its summary.
pub(crate) fn answer<T: serde::Serialize>(
    as_json: bool,
    value: &T,
    summary: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if as_json {
        emit(&json(value)?)
    } else {
        emit(&summary(value))
    }
}

/// `value` as indented JSON, with a final newline.
pub(crate) fn json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    Ok(text + "\n")
}

/// A table: columns separated by two spaces, the last one not padded;
/// columns are left-aligned unless made [`Table::right`].
pub(crate) struct Table {
    headers: Vec<String>,
    right: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_owned()).collect(),
            right: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Aligns these columns (numbers, usually) to the right.
    pub(crate) fn right(mut self, columns: &[usize]) -> Table {
        self.right = columns.to_vec();
        self
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header line, then one line per row.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right.contains(&i) {
                    let _ = write!(line, "{cell:>width$}");
                } else {
                    let _ = write!(line, "{cell:<width$}");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The noun for `n` of a thing: `singular` for exactly one, else `plural`.
pub(crate) fn noun<'a>(n: u64, singular: &'a str, plural: &'a str) -> &'a str {
    if n == 1 { singular } else { plural }
}

/// `n` and its noun: `1 flag`, `3 flags`, `0 flags`.
pub(crate) fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", noun(n as u64, singular, plural))
}

/// An integer with thousands separators: `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text from a server or a file made safe for one terminal line: control
/// characters (newlines included) become spaces.
pub(crate) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// [`clean`], and at most `max` characters (the last one an ellipsis).
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= max {
        return text;
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// A name in quotes, escaped: `"dev"`.
pub(crate) fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// Milliseconds since the Unix epoch as an RFC 3339 time, to the second.
pub(crate) fn date_ms(ms: i64) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000))
        .map_or_else(|_| ms.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_all_but_the_last_column() {
        let mut table = Table::new(&["NAME", "N", "NOTE"]).right(&[1]);
        table.row(vec!["a".into(), "1".into(), "x".into()]);
        table.row(vec!["long name".into(), "100".into(), String::new()]);
        assert_eq!(
            table.render(),
            "NAME         N  NOTE\na            1  x\nlong name  100\n"
        );
    }

    #[test]
    fn nouns_agree_with_their_count() {
        assert_eq!(count(1, "flag", "flags"), "1 flag");
        assert_eq!(count(0, "flag", "flags"), "0 flags");
        assert_eq!(count(2, "entry", "entries"), "2 entries");
        assert_eq!(noun(1, "unit", "units"), "unit");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn server_text_stays_on_one_line() {
        assert_eq!(clean("a\nb\u{1b}[31m"), "a b [31m");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
        assert_eq!(date_ms(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }
}
