//! Reading a flag file, keeping the JSON path of the first error: serde
//! stops at the first wrong type, and a person needs to know where it is.
//!
//! [`Format`] is the one place that decides whether a text is JSON or YAML,
//! from a file name or from a media type.

mod bounds;

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::ParseError;
use crate::model::FlagFile;

pub use bounds::MAX_DEPTH;

/// The two notations a flag file (or one flag) is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// YAML for a name ending in `.yaml` or `.yml` (any case), JSON for
    /// anything else, `-` (standard input) included.
    pub fn of_path(path: impl AsRef<Path>) -> Format {
        let yaml = path
            .as_ref()
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if yaml { Format::Yaml } else { Format::Json }
    }

    /// The format of a `Content-Type` value such as
    /// `application/json; charset=utf-8`: JSON for `application/json` and
    /// any `+json` type, YAML for `application/yaml`, `application/x-yaml`,
    /// `text/yaml` and `text/x-yaml`; `None` for anything else.
    pub fn of_media_type(media_type: &str) -> Option<Format> {
        let essence = media_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Format::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
                Some(Format::Yaml)
            }
            other if other.ends_with("+json") => Some(Format::Json),
            _ => None,
        }
    }

    /// The media type to send a text of this format with.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Yaml => "application/yaml",
        }
    }

    /// Holds `text` to the bounds of everything from outside, without
    /// reading it as a value: no object repeats a key, nothing nests deeper
    /// than [`MAX_DEPTH`]. [`Format::parse`] does this first; a syntax error
    /// is not reported here but by the parse.
    pub fn check_bounds(self, text: &str) -> Result<(), ParseError> {
        bounds::check(self, text)
    }

    /// Reads `text` as a `T`; an error names the path of the value at fault.
    /// JSON must be one value with nothing after it. The text is first held
    /// to the bounds of everything from outside: no object repeats a key, and
    /// nothing nests deeper than [`MAX_DEPTH`] (see [`bounds`]).
    pub fn parse<T: DeserializeOwned>(self, text: &str) -> Result<T, ParseError> {
        bounds::check(self, text)?;
        match self {
            Format::Json => {
                // Most texts are valid: parse them without tracking the
                // path (a measurable part of a small body's parse, see
                // BENCHMARKS.md), and only a failed one again, for the
                // path of its error.
                if let Ok(value) = serde_json::from_str(text) {
                    return Ok(value);
                }
                let mut de = serde_json::Deserializer::from_str(text);
                let value = with_path(&mut de)?;
                de.end().map_err(|e| ParseError {
                    path: String::new(),
                    message: format!("invalid JSON: {e}"),
                })?;
                Ok(value)
            }
            Format::Yaml => with_path(serde_yaml_ng::Deserializer::from_str(text)),
        }
    }
}

/// `JSON` or `YAML`, for messages.
impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Yaml => "YAML",
        })
    }
}

impl FlagFile {
    /// Reads a flag file written in `format`.
    pub fn parse(text: &str, format: Format) -> Result<FlagFile, ParseError> {
        format.parse(text)
    }

    pub fn from_json_str(text: &str) -> Result<FlagFile, ParseError> {
        FlagFile::parse(text, Format::Json)
    }

    pub fn from_yaml_str(text: &str) -> Result<FlagFile, ParseError> {
        FlagFile::parse(text, Format::Yaml)
    }

    pub fn from_json_value(value: serde_json::Value) -> Result<FlagFile, ParseError> {
        with_path(value)
    }
}

pub(crate) fn with_path<'de, D, T>(de: D) -> Result<T, ParseError>
where
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
    T: DeserializeOwned,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let mut message = e.inner().to_string();
        // The YAML deserializer prefixes its own path; keep one.
        if let Some((head, rest)) = message.split_once(": ")
            && !head.is_empty()
            && path.starts_with(head)
        {
            message = rest.to_owned();
        }
        // Some deserializers report an unknown field at its parent object; point
        // at the field itself.
        if let Some(field) = message
            .clone()
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            let last = path.rsplit('.').next().unwrap_or("");
            if last != field {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(field);
            }
        }
        ParseError { path, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_by_extension_in_any_case_json_otherwise() {
        for name in ["flags.yaml", "FLAGS.YML", "dir.d/f.Yaml"] {
            assert_eq!(Format::of_path(name), Format::Yaml, "{name}");
        }
        for name in ["flags.json", "-", "yaml", "flags.yaml.bak", "flags"] {
            assert_eq!(Format::of_path(name), Format::Json, "{name}");
        }
    }

    #[test]
    fn media_types_ignore_parameters_and_case() {
        assert_eq!(
            Format::of_media_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::of_media_type("application/merge-patch+json"),
            Some(Format::Json)
        );
        for yaml in [
            "application/yaml",
            "Application/X-YAML",
            " text/yaml ",
            "text/x-yaml",
        ] {
            assert_eq!(Format::of_media_type(yaml), Some(Format::Yaml), "{yaml}");
        }
        for other in ["text/plain", "", "application/jsonx"] {
            assert_eq!(Format::of_media_type(other), None, "{other}");
        }
        for format in [Format::Json, Format::Yaml] {
            assert_eq!(Format::of_media_type(format.media_type()), Some(format));
        }
    }

    #[test]
    fn both_formats_read_the_same_file_and_name_the_path() {
        let json = FlagFile::parse(
            r#"{"flags": [{"key": "a", "enabled": true}]}"#,
            Format::Json,
        );
        let yaml = FlagFile::parse("flags:\n  - key: a\n    enabled: true\n", Format::Yaml);
        assert_eq!(json.expect("json"), yaml.expect("yaml"));
        let err = FlagFile::parse("flags:\n  - key: a\n    enabled: maybe\n", Format::Yaml)
            .expect_err("not a boolean");
        assert_eq!(err.path, "flags[0].enabled");
        let err = Format::Json
            .parse::<serde_json::Value>("{} {}")
            .expect_err("trailing characters");
        assert!(err.message.contains("trailing"), "{err}");
    }
}
