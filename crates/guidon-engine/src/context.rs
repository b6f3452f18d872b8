//! The attributes of one evaluation.

use serde_json::{Map, Value};

use crate::model::{DEFAULT_BUCKET_BY, TARGETING_KEY};

/// A JSON object of attributes: `{"user_id": "user_42", "country": "US"}`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Context {
    attributes: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("context is not valid JSON: {0}")]
    Syntax(String),
    #[error("context must be a JSON object of attributes, got {0}")]
    NotAnObject(&'static str),
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    /// Adds or replaces an attribute; for building contexts in code.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Context {
        self.attributes.insert(name.into(), value.into());
        self
    }

    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.attributes.insert(name.into(), value.into());
    }

    pub fn from_json_str(text: &str) -> Result<Context, ContextError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ContextError::Syntax(e.to_string()))?;
        Context::try_from(value)
    }

    /// The attribute's value; JSON `null` counts as absent.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attributes.get(name).filter(|v| !v.is_null())
    }

    pub fn attributes(&self) -> &Map<String, Value> {
        &self.attributes
    }

    /// The value of `attribute` as a unit identifier: strings as they are,
    /// integers in decimal, anything else absent. For `user_id`, an absent
    /// value falls back to OpenFeature's `targetingKey`.
    pub(crate) fn unit(&self, attribute: &str) -> Option<Unit<'_>> {
        let found = self.get(attribute).and_then(Unit::from_value);
        if found.is_none() && attribute == DEFAULT_BUCKET_BY {
            return self.get(TARGETING_KEY).and_then(Unit::from_value);
        }
        found
    }
}

impl From<Map<String, Value>> for Context {
    fn from(attributes: Map<String, Value>) -> Context {
        Context { attributes }
    }
}

impl TryFrom<Value> for Context {
    type Error = ContextError;

    fn try_from(value: Value) -> Result<Context, ContextError> {
        match value {
            Value::Object(attributes) => Ok(Context { attributes }),
            other => Err(ContextError::NotAnObject(json_type_name(&other))),
        }
    }
}

pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A unit identifier, borrowed when it is a string, formatted on the stack
/// when it is an integer, so bucketing allocates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit<'a> {
    Str(&'a str),
    Int { buf: [u8; 20], len: u8 },
}

impl<'a> Unit<'a> {
    pub(crate) fn from_value(value: &'a Value) -> Option<Unit<'a>> {
        match value {
            Value::String(s) => Some(Unit::Str(s)),
            Value::Number(n) => {
                if let Some(i) = n.as_u64() {
                    Some(Unit::int(i, false))
                } else {
                    n.as_i64().map(|i| Unit::int(i.unsigned_abs(), i < 0))
                }
            }
            _ => None,
        }
    }

    fn int(mut magnitude: u64, negative: bool) -> Unit<'a> {
        // u64::MAX has 20 digits; a negative i64 has at most 19 plus the sign.
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (magnitude % 10) as u8;
            magnitude /= 10;
            if magnitude == 0 {
                break;
            }
        }
        if negative {
            i -= 1;
            buf[i] = b'-';
        }
        let len = buf.len() - i;
        buf.copy_within(i.., 0);
        Unit::Int {
            buf,
            len: len as u8,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Unit::Str(s) => s,
            Unit::Int { buf, len } => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_are_units_in_decimal() {
        for (v, s) in [
            (json!(0), "0"),
            (json!(42), "42"),
            (json!(-7), "-7"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(i64::MIN), "-9223372036854775808"),
        ] {
            assert_eq!(
                Unit::from_value(&v).map(|u| u.as_str().to_owned()),
                Some(s.to_owned())
            );
        }
        assert!(Unit::from_value(&json!(1.5)).is_none());
        assert!(Unit::from_value(&json!(true)).is_none());
        assert!(Unit::from_value(&json!(["a"])).is_none());
    }

    #[test]
    fn targeting_key_is_the_fallback_for_user_id_only() {
        let ctx = Context::new().with("targetingKey", "tk");
        assert_eq!(
            ctx.unit("user_id").map(|u| u.as_str().to_owned()),
            Some("tk".into())
        );
        assert!(ctx.unit("account_id").is_none());
        let ctx = ctx.with("user_id", "u");
        assert_eq!(
            ctx.unit("user_id").map(|u| u.as_str().to_owned()),
            Some("u".into())
        );
    }

    #[test]
    fn a_context_must_be_an_object() {
        assert!(matches!(
            Context::from_json_str("[1]"),
            Err(ContextError::NotAnObject(_))
        ));
        assert!(matches!(
            Context::from_json_str("{"),
            Err(ContextError::Syntax(_))
        ));
    }
}
