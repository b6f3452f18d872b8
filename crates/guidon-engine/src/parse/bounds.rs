//! The bounds every text from outside is held to before it is read as a
//! value: no object repeats a key (JSON and YAML would both keep the last
//! one silently), and nothing nests deeper than [`MAX_DEPTH`].
//!
//! Two passes, both linear:
//!
//! - For YAML only, a scan of the text ([`yaml_scan`]) that follows
//!   libyaml's tokenizer far enough to count the flow collections (`[`, `{`)
//!   and block collections open at each point. libyaml's cost grows with
//!   the square of the flow depth (every token looks at every open level's
//!   possible simple key): 60,000 levels take seconds. The scan refuses the
//!   text before libyaml sees it.
//! - A walk of the value ([`walk`]), a serde visitor fed by the format's own
//!   deserializer: it counts the depth of every object and array and keeps
//!   each object's keys, and allocates no value. It is the one owner of
//!   duplicate-key detection: derived structs also refuse a repeated field,
//!   but maps (attributes, rollouts) and `serde_json::Value` keep the last.
//!
//! A syntax error is not the walk's business: it returns `Ok` and leaves the
//! error to the parse that follows, so messages stay those of the parser.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use foldhash::{HashSet, HashSetExt as _};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::ParseError;

use super::Format;

/// How deep objects and arrays may nest in a text from outside: the body
/// itself is level 1. A flag file needs about ten.
pub const MAX_DEPTH: usize = 64;

/// Checks `text` against the bounds (see the module's documentation).
pub(crate) fn check(format: Format, text: &str) -> Result<(), ParseError> {
    match format {
        Format::Json => walk(&mut serde_json::Deserializer::from_str(text)),
        Format::Yaml => {
            yaml_scan(text)?;
            walk(serde_yaml_ng::Deserializer::from_str(text))
        }
    }
}

fn too_deep(path: String) -> ParseError {
    ParseError {
        path,
        message: format!("nested deeper than {MAX_DEPTH} levels, the limit"),
    }
}

// ---- the walk ----

/// Walks one value from `de`, returning the first bound it breaks.
pub(crate) fn walk<'de, D: Deserializer<'de>>(de: D) -> Result<(), ParseError> {
    let mut state = State {
        path: Vec::new(),
        depth: 0,
        keys: Vec::new(),
        broken: Cell::new(None),
    };
    let result = Node { state: &mut state }.deserialize(de);
    match (result, state.broken.take()) {
        (_, Some(broken)) => Err(broken),
        // A syntax or type error: the real parse reports it.
        (_, None) => Ok(()),
    }
}

enum Segment<'de> {
    Key(Cow<'de, str>),
    Index(usize),
}

struct State<'de> {
    path: Vec<Segment<'de>>,
    depth: usize,
    /// The keys of every object being walked, innermost last: one buffer
    /// for the whole walk rather than a set for each object.
    keys: Vec<Cow<'de, str>>,
    broken: Cell<Option<ParseError>>,
}

/// Up to this many keys an object's are compared one by one; beyond, in a
/// hash set.
const LINEAR_KEYS: usize = 16;

impl State<'_> {
    /// The path in the notation of [`ParseError::path`]: `flags[0].key`.
    fn path_string(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }

    fn fail<E: de::Error>(&self, broken: ParseError) -> E {
        let message = broken.message.clone();
        self.broken.set(Some(broken));
        E::custom(message)
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.fail(too_deep(self.path_string())));
        }
        Ok(())
    }
}

struct Node<'a, 'de> {
    state: &'a mut State<'de>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

macro_rules! scalars {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<(), E> { Ok(()) })*
    };
}

impl<'de> Visitor<'de> for Node<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128,
        visit_u128: u128, visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.state;
        state.enter()?;
        let mut index = 0;
        loop {
            state.path.push(Segment::Index(index));
            let more = seq.next_element_seed(Node { state: &mut *state })?;
            state.path.pop();
            if more.is_none() {
                break;
            }
            index += 1;
        }
        state.depth -= 1;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.state;
        state.enter()?;
        let start = state.keys.len();
        let mut set: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(Key)? {
            let own = &state.keys[start..];
            let repeated = match &mut set {
                Some(set) => !set.insert(key.clone()),
                None if own.len() < LINEAR_KEYS => own.contains(&key),
                None => {
                    let mut all: HashSet<Cow<'de, str>> = HashSet::with_capacity(own.len() * 2);
                    all.extend(own.iter().cloned());
                    let repeated = !all.insert(key.clone());
                    set = Some(all);
                    repeated
                }
            };
            if set.is_none() {
                state.keys.push(key.clone());
            }
            if repeated {
                let at = state.path_string();
                state.path.push(Segment::Key(key.clone()));
                let path = state.path_string();
                let place = if at.is_empty() {
                    "the top level".to_owned()
                } else {
                    at
                };
                return Err(state.fail(ParseError {
                    path,
                    message: format!("duplicate key {:?} in the object at {place}", &*key),
                }));
            }
            state.path.push(Segment::Key(key));
            map.next_value_seed(Node { state: &mut *state })?;
            state.path.pop();
        }
        state.keys.truncate(start);
        state.depth -= 1;
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A YAML tag (`!name value`): walk the value it tags.
        let ((), variant) = data.variant_seed(Ignored)?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

/// Reads a key as text: a string, or a YAML scalar (a number, a boolean,
/// `null`) as it would be written. YAML's `1` and `"1"` are the same key to
/// a map of strings, so they count as one here.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed("null"))
    }
    // A sequence or a mapping as a key: an error for every model type,
    // which the parse reports.
}

/// A YAML tag's name, skipped.
struct Ignored;

impl<'de> DeserializeSeed<'de> for Ignored {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de::IgnoredAny::deserialize(de).map(|_| ())
    }
}

use serde::Deserialize as _;

// ---- the YAML scan ----

/// Refuses a YAML text whose flow and block collections nest deeper than
/// [`MAX_DEPTH`], in one pass over the text, before libyaml reads it.
///
/// It follows libyaml's tokenizer (`unsafe-libyaml`'s `scanner.rs`) where
/// that decides what is a token: quoted scalars, block scalars (`|`, `>`)
/// and their indentation, plain scalars and where they end, comments, tags
/// and anchors. Each `[` or `{` libyaml would read as a token opens a
/// level, each block sequence or mapping whose indentation libyaml pushes
/// another; the count never exceeds the value's real depth, so a text the
/// scan refuses is too deep. Where the scan is unsure whether a `[` is text
/// or a token it counts it: the error is then a refusal, never a slow parse.
pub(crate) fn yaml_scan(text: &str) -> Result<(), ParseError> {
    let mut scan = Scan {
        s: text.strip_prefix('\u{feff}').unwrap_or(text).as_bytes(),
        i: 0,
        line: 1,
        col: 0,
        flow: 0,
        indents: Vec::new(),
        key: None,
    };
    scan.run()
}

struct Scan<'a> {
    s: &'a [u8],
    i: usize,
    /// 1-based, for the message.
    line: usize,
    /// In characters, as libyaml counts.
    col: usize,
    /// Open flow collections.
    flow: usize,
    /// The columns of the open block collections (libyaml's indents).
    indents: Vec<usize>,
    /// A possible simple key in block context: (column, line, offset).
    key: Option<(usize, usize, usize)>,
}

impl Scan<'_> {
    fn peek(&self, k: usize) -> u8 {
        self.s.get(self.i + k).copied().unwrap_or(0)
    }

    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    /// The byte length of the line break at the cursor (libyaml's
    /// `IS_BREAK`: CR, LF, NEL, LS, PS), or 0.
    fn brk(&self) -> usize {
        match self.peek(0) {
            b'\r' if self.peek(1) == b'\n' => 2,
            b'\r' | b'\n' => 1,
            0xC2 if self.peek(1) == 0x85 => 2,
            0xE2 if self.peek(1) == 0x80 && matches!(self.peek(2), 0xA8 | 0xA9) => 3,
            _ => 0,
        }
    }

    fn blank(&self, k: usize) -> bool {
        matches!(self.peek(k), b' ' | b'\t')
    }

    /// libyaml's `IS_BLANKZ` at `k`: a blank, a break or the end.
    fn blankz(&self, k: usize) -> bool {
        match self.peek(k) {
            b' ' | b'\t' | b'\r' | b'\n' => true,
            0 => true,
            0xC2 => self.peek(k + 1) == 0x85,
            0xE2 => self.peek(k + 1) == 0x80 && matches!(self.peek(k + 2), 0xA8 | 0xA9),
            _ => false,
        }
    }

    /// Moves past one character (or one line break).
    fn bump(&mut self) {
        let n = self.brk();
        if n > 0 {
            self.i += n;
            self.line += 1;
            self.col = 0;
            return;
        }
        self.i += 1;
        while self.i < self.s.len() && self.s[self.i] & 0xC0 == 0x80 {
            self.i += 1;
        }
        self.col += 1;
    }

    fn skip_to_break(&mut self) {
        while !self.eof() && self.brk() == 0 {
            self.bump();
        }
    }

    fn indent(&self) -> isize {
        self.indents.last().map_or(-1, |&c| c as isize)
    }

    fn check(&self) -> Result<(), ParseError> {
        if self.flow + self.indents.len() > MAX_DEPTH {
            return Err(ParseError {
                path: String::new(),
                message: format!(
                    "the YAML nests deeper than {MAX_DEPTH} levels, the limit (line {})",
                    self.line
                ),
            });
        }
        Ok(())
    }

    fn roll(&mut self, col: usize) -> Result<(), ParseError> {
        if self.indent() < col as isize {
            self.indents.push(col);
        }
        self.check()
    }

    fn save_key(&mut self) {
        if self.flow == 0 {
            self.key = Some((self.col, self.line, self.i));
        }
    }

    fn doc_marker(&self) -> bool {
        self.col == 0
            && ((self.peek(0) == b'-' && self.peek(1) == b'-' && self.peek(2) == b'-')
                || (self.peek(0) == b'.' && self.peek(1) == b'.' && self.peek(2) == b'.'))
            && self.blankz(3)
    }

    fn run(&mut self) -> Result<(), ParseError> {
        loop {
            // yaml_parser_scan_to_next_token
            loop {
                if self.blank(0) {
                    self.bump();
                } else if self.peek(0) == b'#' {
                    self.skip_to_break();
                } else if self.brk() > 0 {
                    self.bump();
                } else {
                    break;
                }
            }
            if self.eof() {
                return Ok(());
            }
            // yaml_parser_stale_simple_keys
            if let Some((_, line, at)) = self.key
                && (line != self.line || at + 1024 < self.i)
            {
                self.key = None;
            }
            if self.flow == 0 {
                while self.indent() > self.col as isize {
                    self.indents.pop();
                }
            }
            if self.col == 0 && self.peek(0) == b'%' {
                self.skip_to_break();
                continue;
            }
            if self.doc_marker() {
                self.indents.clear();
                self.key = None;
                for _ in 0..3 {
                    self.bump();
                }
                continue;
            }
            let c = self.peek(0);
            let start = self.i;
            match c {
                b'[' | b'{' => {
                    self.save_key();
                    self.flow += 1;
                    self.check()?;
                    self.bump();
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    self.bump();
                }
                b',' => {
                    self.key = None;
                    self.bump();
                }
                b'-' if self.blankz(1) => {
                    if self.flow == 0 {
                        self.roll(self.col)?;
                    }
                    self.key = None;
                    self.bump();
                }
                b'?' if self.flow > 0 || self.blankz(1) => {
                    if self.flow == 0 {
                        self.roll(self.col)?;
                    }
                    self.key = None;
                    self.bump();
                }
                b':' if self.flow > 0 || self.blankz(1) => {
                    if self.flow == 0 {
                        let col = self.key.take().map_or(self.col, |(col, _, _)| col);
                        self.roll(col)?;
                    }
                    self.bump();
                }
                b'*' | b'&' | b'!' => {
                    self.save_key();
                    self.bump();
                    // An anchor's or alias's name, or a tag: up to a blank,
                    // or a `,` in flow context (libyaml refuses any other
                    // character after one and stops).
                    while !(self.blankz(0) || (self.flow > 0 && self.peek(0) == b',')) {
                        if c != b'!' && matches!(self.peek(0), b'[' | b']' | b'{' | b'}') {
                            break;
                        }
                        self.bump();
                    }
                }
                b'|' | b'>' if self.flow == 0 => {
                    self.key = None;
                    self.block_scalar();
                }
                b'\'' => {
                    self.save_key();
                    self.single_quoted();
                }
                b'"' => {
                    self.save_key();
                    self.double_quoted();
                }
                _ => {
                    self.save_key();
                    self.plain();
                }
            }
            // Every token moves on; one that cannot (a NUL byte, which the
            // scan reads as the end and libyaml refuses) is stepped over,
            // and the real parse reports it.
            if self.i == start {
                self.bump();
            }
        }
    }

    fn single_quoted(&mut self) {
        self.bump();
        while !self.eof() {
            if self.peek(0) == b'\'' {
                self.bump();
                if self.peek(0) == b'\'' {
                    self.bump();
                    continue;
                }
                return;
            }
            self.bump();
        }
    }

    fn double_quoted(&mut self) {
        self.bump();
        while !self.eof() {
            match self.peek(0) {
                b'\\' => {
                    self.bump();
                    if !self.eof() {
                        self.bump();
                    }
                }
                b'"' => {
                    self.bump();
                    return;
                }
                _ => self.bump(),
            }
        }
    }

    /// yaml_parser_scan_plain_scalar: up to `: `, ` #`, a flow indicator in
    /// flow context, or a line less indented than the block.
    fn plain(&mut self) {
        let indent = self.indent() + 1;
        loop {
            if self.doc_marker() || self.peek(0) == b'#' {
                return;
            }
            while !self.eof() && !self.blankz(0) {
                let c = self.peek(0);
                if c == b':' && self.blankz(1) {
                    return;
                }
                if self.flow > 0
                    && (matches!(c, b',' | b'[' | b']' | b'{' | b'}')
                        || (c == b':'
                            && matches!(self.peek(1), b',' | b'?' | b'[' | b']' | b'{' | b'}')))
                {
                    return;
                }
                self.bump();
            }
            if self.eof() || !(self.blank(0) || self.brk() > 0) {
                return;
            }
            while self.blank(0) || self.brk() > 0 {
                self.bump();
            }
            if self.flow == 0 && (self.col as isize) < indent {
                return;
            }
        }
    }

    /// yaml_parser_scan_block_scalar: the header, then every line indented
    /// at least as the content.
    fn block_scalar(&mut self) {
        self.bump();
        let mut increment = 0usize;
        for _ in 0..2 {
            match self.peek(0) {
                b'+' | b'-' => self.bump(),
                d @ b'1'..=b'9' if increment == 0 => {
                    increment = usize::from(d - b'0');
                    self.bump();
                }
                _ => {}
            }
        }
        while self.blank(0) {
            self.bump();
        }
        if self.peek(0) == b'#' {
            self.skip_to_break();
        }
        if self.brk() == 0 {
            // libyaml stops here with an error; so does the count.
            return;
        }
        self.bump();
        let parent = self.indent();
        let mut indent = if increment == 0 {
            0
        } else if parent >= 0 {
            parent as usize + increment
        } else {
            increment
        };
        self.block_breaks(&mut indent, parent);
        while self.col == indent && !self.eof() {
            self.skip_to_break();
            if self.eof() {
                return;
            }
            self.bump();
            self.block_breaks(&mut indent, parent);
        }
    }

    /// yaml_parser_scan_block_scalar_breaks.
    fn block_breaks(&mut self, indent: &mut usize, parent: isize) {
        let mut max_indent = 0;
        loop {
            while (*indent == 0 || self.col < *indent) && self.peek(0) == b' ' {
                self.bump();
            }
            max_indent = max_indent.max(self.col);
            if self.brk() == 0 {
                break;
            }
            self.bump();
        }
        if *indent == 0 {
            *indent = max_indent.max((parent + 1).max(1) as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Result<(), ParseError> {
        check(Format::Json, text)
    }

    fn yaml(text: &str) -> Result<(), ParseError> {
        check(Format::Yaml, text)
    }

    #[test]
    fn a_repeated_key_is_named_with_its_path() {
        let err = json(r#"{"flags": [{"key": "x", "enabled": false, "enabled": true}]}"#)
            .expect_err("duplicate");
        assert_eq!(err.path, "flags[0].enabled");
        assert!(err.message.contains(r#"duplicate key "enabled""#), "{err}");
        assert!(err.message.contains("flags[0]"), "{err}");
        let err = json(r#"{"a": 1, "a": 2}"#).expect_err("top level");
        assert_eq!(err.path, "a");
        assert!(err.message.contains("top level"), "{err}");
        // An escape spells the same key.
        assert!(json(r#"{"a": 1, "\u0061": 2}"#).is_err());
        let err =
            yaml("flags:\n  - key: x\n    enabled: false\n    enabled: true\n").expect_err("yaml");
        assert_eq!(err.path, "flags[0].enabled");
        // The same key in sibling objects is no repetition.
        json(r#"{"a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}, {"k": 2}]}"#).expect("siblings");
        yaml("a: {k: 1}\nb:\n  k: 1\n").expect("siblings");
    }

    #[test]
    fn a_repeated_key_is_found_in_a_large_object() {
        let keys: Vec<String> = (0..100).map(|i| format!(r#""k{i}": {i}"#)).collect();
        json(&format!("{{{}}}", keys.join(", "))).expect("distinct");
        for (first, again) in [(3, 10), (3, 40), (30, 90)] {
            let mut with = keys.clone();
            with.insert(again, format!(r#""k{first}": 0"#));
            let err = json(&format!("{{{}}}", with.join(", "))).expect_err("repeated");
            assert_eq!(err.path, format!("k{first}"), "{first} again at {again}");
        }
    }

    #[test]
    fn yaml_scalar_keys_compare_as_text() {
        assert!(yaml("1: a\n'1': b\n").is_err());
        assert!(yaml("true: a\ntrue: b\n").is_err());
        yaml("1: a\n2: b\n").expect("distinct");
    }

    #[test]
    fn depth_is_bounded_at_the_limit() {
        let nested = |n: usize| "[".repeat(n) + &"]".repeat(n);
        json(&nested(MAX_DEPTH)).expect("at the limit");
        let err = json(&nested(MAX_DEPTH + 1)).expect_err("beyond");
        assert!(err.message.contains("64"), "{err}");
        assert_eq!(err.path, format!("{}", "[0]".repeat(MAX_DEPTH)));
        yaml(&nested(MAX_DEPTH)).expect("yaml at the limit");
        assert!(yaml(&nested(MAX_DEPTH + 1)).is_err());
        // Block nesting, one level per line.
        let block = |n: usize| -> String {
            (0..n)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect::<String>()
        };
        yaml(&block(MAX_DEPTH)).expect("block at the limit");
        assert!(yaml(&block(MAX_DEPTH + 1)).is_err());
        assert!(yaml(&("- ".repeat(MAX_DEPTH + 1) + "x\n")).is_err());
        yaml(&("- ".repeat(MAX_DEPTH) + "x\n")).expect("compact at the limit");
    }

    #[test]
    fn the_yaml_scan_refuses_deep_flow_before_libyaml() {
        // The shape that took seconds: a key, then 60,000 open brackets.
        let deep = "k: ".to_owned() + &"[".repeat(60_000);
        let err = yaml_scan(&deep).expect_err("deep");
        assert!(err.message.contains("64"), "{err}");
        let deep = "{a: ".repeat(60_000);
        assert!(yaml_scan(&deep).is_err());
    }

    #[test]
    fn the_yaml_scan_skips_brackets_that_are_text() {
        let deep = "[".repeat(200);
        let texts = [
            format!("a: '{deep}'\n"),
            format!("a: \"{deep}\"\n"),
            format!("a: x{deep}\n"),
            format!("a: b # {deep}\n"),
            format!("# {deep}\na: 1\n"),
            format!("a: |\n  {deep}\n  {deep}\nb: 1\n"),
            format!("a: >-\n    {deep}\n\n    more\nb: 1\n"),
            format!("a: \"multi\n  {deep}\n  line\"\nb: [x, '{deep}']\n"),
            format!("a: plain\n  continued {deep}\nb: 1\n"),
            format!("a: ^[a-z]+[0-9]*$\nb: [\"[\", '[', \"{deep}\"]\n"),
        ];
        for text in texts {
            yaml_scan(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        }
    }

    #[test]
    fn the_yaml_scan_counts_brackets_after_text_ends() {
        let deep = "[".repeat(200);
        let texts = [
            format!("a: |\n  text\nb: {deep}\n"),
            format!("a: 'x'\nb: {deep}\n"),
            format!("a: plain\nb: {deep}\n"),
            format!("a: [x, y]\nb: {deep}\n"),
            format!("- &anchor !tag {deep}\n"),
            format!("a: \"q\\\"\" \nb: {deep}\n"),
        ];
        for text in texts {
            assert!(yaml_scan(&text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_syntax_error_is_left_to_the_parse() {
        json("{").expect("not the walk's business");
        json(r#"{"a": }"#).expect("not the walk's business");
        yaml("a: [").expect("not the walk's business");
    }

    /// Found by the request_body fuzz target (fuzz/corpus/request_body/eab97c19…):
    /// a NUL byte after a form feed made the scan stop moving.
    #[test]
    fn a_nul_byte_does_not_stall_the_scan() {
        for text in ["\u{c}\0*", "\0", "a: \0", "[\0]", "- \0\0"] {
            let _ = yaml_scan(text);
        }
    }
}
