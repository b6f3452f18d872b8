//! The attributes of one evaluation.

use serde_json::{Map, Value};

use crate::model::{DEFAULT_BUCKET_BY, TARGETING_KEY};

/// A JSON object of attributes: `{"user_id": "user_42", "country": "US"}`.
///
/// Stored as a small vector of (name hash, name, value). Conditions carry the
/// hash of their attribute name, computed once when the snapshot is
/// compiled, so a lookup compares integers and checks one name; contexts are
/// small, and a scan beats a tree or a hash table at that size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    hash: u64,
    name: Box<str>,
    value: Value,
}

/// An attribute name with its hash, prepared at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttrKey {
    hash: u64,
    name: Box<str>,
}

impl AttrKey {
    pub(crate) fn new(name: &str) -> AttrKey {
        AttrKey {
            hash: name_hash(name),
            name: name.into(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

fn name_hash(name: &str) -> u64 {
    use std::hash::BuildHasher;
    // A fixed seed: the hash of a name must be the same in every snapshot
    // and context. Collisions only cost a string comparison.
    foldhash::fast::FixedState::with_seed(0x6775_6964_6f6e).hash_one(name)
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
        self.insert(name, value);
        self
    }

    /// Adds or replaces an attribute.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        let name: String = name.into();
        let value = value.into();
        let hash = name_hash(&name);
        match self
            .entries
            .iter_mut()
            .find(|e| e.hash == hash && *e.name == *name)
        {
            Some(entry) => entry.value = value,
            None => self.entries.push(Entry {
                hash,
                name: name.into(),
                value,
            }),
        }
    }

    pub fn from_json_str(text: &str) -> Result<Context, ContextError> {
        // Through the parser's bounds: a repeated attribute (`targetingKey`
        // twice) or a context nested too deep is refused, not read as its last.
        let value: Value = crate::Format::Json
            .parse(text)
            .map_err(|e| ContextError::Syntax(e.to_string()))?;
        Context::try_from(value)
    }

    /// One line of a JSON Lines file of contexts, as `guidon eval
    /// --contexts` and the impact preview read them: an object per line;
    /// `None` for a blank line, which is skipped.
    pub fn from_json_line(line: &str) -> Result<Option<Context>, ContextError> {
        if line.trim().is_empty() {
            return Ok(None);
        }
        Context::from_json_str(line).map(Some)
    }

    /// The attribute's value; JSON `null` counts as absent.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.lookup(&AttrKey::new(name))
    }

    pub(crate) fn lookup(&self, key: &AttrKey) -> Option<&Value> {
        self.entries
            .iter()
            .find(|e| e.hash == key.hash && *e.name == *key.name)
            .map(|e| &e.value)
            .filter(|v| !v.is_null())
    }

    /// The attributes, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|e| (&*e.name, &e.value))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `attribute` as a unit identifier: strings as they are,
    /// integers in decimal, anything else absent. When it is absent and
    /// `fallback` is given (`targetingKey` for `user_id`), the fallback's.
    pub(crate) fn unit(&self, attribute: &UnitAttr) -> Option<Unit<'_>> {
        self.lookup(&attribute.key)
            .and_then(Unit::from_value)
            .or_else(|| {
                let fallback = attribute.fallback.as_ref()?;
                self.lookup(fallback).and_then(Unit::from_value)
            })
    }
}

/// An attribute that identifies units (bucketing, targets, segments), with
/// its fallback. The `targetingKey` fallback applies to `user_id` only (the
/// default bucketing attribute): a flag bucketed by `account_id` must not
/// silently bucket by user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitAttr {
    pub(crate) key: AttrKey,
    fallback: Option<AttrKey>,
}

impl UnitAttr {
    /// "user_id and targetingKey absent", for explanations.
    pub(crate) fn describe_absent(&self) -> String {
        match &self.fallback {
            Some(fallback) => format!(
                "{:?} and {:?} absent or not a string or integer",
                self.key.name(),
                fallback.name()
            ),
            None => format!("{:?} absent or not a string or integer", self.key.name()),
        }
    }

    pub(crate) fn new(name: &str) -> UnitAttr {
        UnitAttr {
            key: AttrKey::new(name),
            fallback: (name == DEFAULT_BUCKET_BY).then(|| AttrKey::new(TARGETING_KEY)),
        }
    }
}

impl From<Map<String, Value>> for Context {
    fn from(attributes: Map<String, Value>) -> Context {
        // A JSON object's keys are unique: no need to look for duplicates.
        let entries = attributes
            .into_iter()
            .map(|(name, value)| Entry {
                hash: name_hash(&name),
                name: name.into(),
                value,
            })
            .collect();
        Context { entries }
    }
}

impl TryFrom<Value> for Context {
    type Error = ContextError;

    fn try_from(value: Value) -> Result<Context, ContextError> {
        match value {
            Value::Object(attributes) => Ok(Context::from(attributes)),
            other => Err(ContextError::NotAnObject(json_type_name(&other))),
        }
    }
}

impl serde::Serialize for Context {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Context {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Context, D::Error> {
        Map::<String, Value>::deserialize(deserializer).map(Context::from)
    }
}

/// A JSON value's type as an error message names it ("a string", "null").
pub fn json_type_name(value: &Value) -> &'static str {
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

    fn unit_of(ctx: &Context, attribute: &str) -> Option<String> {
        ctx.unit(&UnitAttr::new(attribute))
            .map(|u| u.as_str().to_owned())
    }

    #[test]
    fn targeting_key_is_the_fallback_for_user_id_only() {
        let ctx = Context::new()
            .with("targetingKey", "tk")
            .with("account_id", 5);
        assert_eq!(unit_of(&ctx, "user_id"), Some("tk".into()));
        assert_eq!(unit_of(&ctx, "account_id"), Some("5".into()));
        assert_eq!(unit_of(&ctx, "team_id"), None);
        let ctx = ctx.with("user_id", "u");
        assert_eq!(unit_of(&ctx, "user_id"), Some("u".into()));
    }

    #[test]
    fn insert_replaces_and_null_is_absent() {
        let mut ctx = Context::new().with("a", 1).with("b", Value::Null);
        ctx.insert("a", 2);
        assert_eq!(ctx.len(), 2);
        assert_eq!(ctx.get("a"), Some(&json!(2)));
        assert_eq!(ctx.get("b"), None);
        let text = serde_json::to_string(&ctx).expect("serializes");
        let round: Context = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(round.get("a"), Some(&json!(2)));
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

    /// The CLI's `--context`: a repeated attribute is refused, not read as
    /// its last value.
    #[test]
    fn a_repeated_attribute_is_refused() {
        let err = Context::from_json_str(r#"{"targetingKey": "a", "targetingKey": "b"}"#)
            .expect_err("duplicate");
        let message = err.to_string();
        assert!(
            message.contains(r#"duplicate key "targetingKey""#),
            "{message}"
        );
        Context::from_json_str(r#"{"targetingKey": "a", "plan": {"targetingKey": "b"}}"#)
            .expect("the same name at another level");
    }
}
