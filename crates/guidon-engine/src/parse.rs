//! Reading a flag file, keeping the JSON path of the first error: serde
//! stops at the first wrong type, and a person needs to know where it is.

use serde::de::DeserializeOwned;

use crate::error::ParseError;
use crate::model::FlagFile;

impl FlagFile {
    pub fn from_json_str(text: &str) -> Result<FlagFile, ParseError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let file = with_path(&mut de)?;
        de.end().map_err(|e| ParseError {
            path: String::new(),
            message: e.to_string(),
        })?;
        Ok(file)
    }

    pub fn from_yaml_str(text: &str) -> Result<FlagFile, ParseError> {
        with_path(serde_yaml_ng::Deserializer::from_str(text))
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
