//! Reading what the user gives: a file, or standard input for `-`, as text
//! in the format its name says.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use guidon_engine::Format;

/// A document read from a file or standard input.
pub(crate) struct Input {
    /// The file's name, or `standard input`, for messages.
    pub(crate) name: String,
    pub(crate) text: String,
    /// YAML for a name ending in `.yaml`/`.yml`, JSON otherwise (and for `-`).
    pub(crate) format: Format,
}

impl Input {
    pub(crate) fn read(path: &Path) -> anyhow::Result<Input> {
        let (name, bytes) = if path == Path::new("-") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .context("reading standard input")?;
            ("standard input".to_owned(), bytes)
        } else {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            (path.display().to_string(), bytes)
        };
        let mut text = String::from_utf8(bytes).map_err(|_| anyhow!("{name} is not UTF-8 text"))?;
        // Editors on some systems save a byte-order mark; it is not JSON.
        if text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        Ok(Input {
            name,
            text,
            format: Format::of_path(path),
        })
    }

    /// The document as a JSON value, so that a syntax error names the file
    /// before anything is sent.
    pub(crate) fn value(&self) -> anyhow::Result<serde_json::Value> {
        if self.text.trim().is_empty() {
            bail!("{} is empty", self.name);
        }
        self.format
            .parse(&self.text)
            .map_err(|e| anyhow!("{} is not valid {}: {e}", self.name, self.format))
    }
}
