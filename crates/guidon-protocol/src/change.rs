//! One change to an environment, as the log keeps it and the wire carries it.

use guidon_engine::model::{Flag, Segment};
use serde::de::Error as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::{DecodeError, PROTOCOL_VERSION, Update, check_protocol, default_protocol};

/// What a key names: a flag or a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Flag,
    Segment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Flag => "flag",
            Kind::Segment => "segment",
        }
    }

    /// The kind named `text` (as [`Kind::as_str`] writes it).
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "flag" => Some(Kind::Flag),
            "segment" => Some(Kind::Segment),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Op> {
        match text {
            "upsert" => Some(Op::Upsert),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// A flag's or a segment's definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    Flag(Flag),
    Segment(Segment),
}

impl Definition {
    pub fn kind(&self) -> Kind {
        match self {
            Definition::Flag(_) => Kind::Flag,
            Definition::Segment(_) => Kind::Segment,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Definition::Flag(f) => &f.key,
            Definition::Segment(s) => &s.key,
        }
    }

    /// Reads a definition of `kind` from its JSON text.
    pub fn from_json(kind: Kind, text: &str) -> Result<Definition, serde_json::Error> {
        Ok(match kind {
            Kind::Flag => Definition::Flag(serde_json::from_str(text)?),
            Kind::Segment => Definition::Segment(serde_json::from_str(text)?),
        })
    }

    pub fn to_json(&self) -> String {
        // A definition of the model always serializes: its maps have
        // string keys and its numbers are finite (validation saw to it).
        match self {
            Definition::Flag(f) => serde_json::to_string(f),
            Definition::Segment(s) => serde_json::to_string(s),
        }
        .unwrap_or_default()
    }
}

impl Serialize for Definition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Definition::Flag(f) => f.serialize(serializer),
            Definition::Segment(s) => s.serialize(serializer),
        }
    }
}

/// What a change did: put a definition in place, or delete a key.
// Most changes are upserts, and a change lives only as long as a message:
// boxing the definition would cost an allocation per change for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    Upsert(Definition),
    Delete(Kind),
}

/// One key changed at one revision. An upsert's key is its definition's,
/// so a change whose definition names another key cannot be built (nor
/// decoded).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub(crate) revision: u64,
    pub(crate) key: String,
    /// The key's version after the change; for a delete, the version deleted.
    pub(crate) version: u64,
    pub(crate) edit: Edit,
}

impl Change {
    pub fn upsert(revision: u64, version: u64, definition: Definition) -> Change {
        Change {
            revision,
            key: definition.key().to_owned(),
            version,
            edit: Edit::Upsert(definition),
        }
    }

    pub fn delete(revision: u64, kind: Kind, key: impl Into<String>, version: u64) -> Change {
        Change {
            revision,
            key: key.into(),
            version,
            edit: Edit::Delete(kind),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn edit(&self) -> &Edit {
        &self.edit
    }

    pub fn into_edit(self) -> Edit {
        self.edit
    }

    pub fn kind(&self) -> Kind {
        match &self.edit {
            Edit::Upsert(d) => d.kind(),
            Edit::Delete(kind) => *kind,
        }
    }

    pub fn op(&self) -> Op {
        match self.edit {
            Edit::Upsert(_) => Op::Upsert,
            Edit::Delete(_) => Op::Delete,
        }
    }

    pub fn definition(&self) -> Option<&Definition> {
        match &self.edit {
            Edit::Upsert(d) => Some(d),
            Edit::Delete(_) => None,
        }
    }
}

/// `{"revision", "kind", "key", "op", "version", "definition"}`; a delete's
/// definition is `null`.
impl Serialize for Change {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Change", 6)?;
        s.serialize_field("revision", &self.revision)?;
        s.serialize_field("kind", &self.kind())?;
        s.serialize_field("key", &self.key)?;
        s.serialize_field("op", &self.op())?;
        s.serialize_field("version", &self.version)?;
        s.serialize_field("definition", &self.definition())?;
        s.end()
    }
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Change, D::Error> {
        // The definition's type depends on `kind`, which may come after it:
        // it is kept as raw JSON text and read once the kind is known, so
        // it is parsed once, straight into the model.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            revision: u64,
            kind: Kind,
            key: String,
            op: Op,
            version: u64,
            #[serde(default)]
            definition: Option<Box<RawValue>>,
        }
        let wire = Wire::deserialize(deserializer)?;
        let what = || format!("{} {:?}", wire.kind, wire.key);
        let edit = match (wire.op, &wire.definition) {
            (Op::Upsert, Some(raw)) => {
                let definition = Definition::from_json(wire.kind, raw.get())
                    .map_err(|e| D::Error::custom(format!("{}: {e}", what())))?;
                if definition.key() != wire.key {
                    return Err(D::Error::custom(format!(
                        "{}: its definition is keyed {:?}",
                        what(),
                        definition.key()
                    )));
                }
                Edit::Upsert(definition)
            }
            (Op::Upsert, None) => {
                return Err(D::Error::custom(format!(
                    "{}: an upsert without a definition",
                    what()
                )));
            }
            (Op::Delete, None) => Edit::Delete(wire.kind),
            (Op::Delete, Some(raw)) if raw.get() == "null" => Edit::Delete(wire.kind),
            (Op::Delete, Some(_)) => {
                return Err(D::Error::custom(format!(
                    "{}: a delete with a definition",
                    what()
                )));
            }
        };
        Ok(Change {
            revision: wire.revision,
            key: wire.key,
            version: wire.version,
            edit,
        })
    }
}

/// The changes after a revision, up to `revision`, in (revision, kind,
/// key) order: the catch-up answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    /// The environment's revision when read.
    pub revision: u64,
    /// The environment's creation time (ms): a reader holding another one
    /// must take the whole document instead, since a re-created
    /// environment's revisions do not continue its predecessor's.
    pub epoch: Option<i64>,
    pub changes: Vec<Change>,
}

impl Changes {
    /// One update per revision, in order.
    pub fn into_updates(self) -> Vec<Update> {
        let mut updates: Vec<Update> = Vec::new();
        for change in self.changes {
            match updates.last_mut() {
                Some(last) if last.revision == change.revision => last.changes.push(change),
                _ => updates.push(Update {
                    revision: change.revision,
                    changes: vec![change],
                }),
            }
        }
        updates
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Changes, DecodeError> {
        crate::decode(text)
    }
}

impl Serialize for Changes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Changes", 4)?;
        s.serialize_field("protocol", &PROTOCOL_VERSION)?;
        s.serialize_field("revision", &self.revision)?;
        if let Some(epoch) = self.epoch {
            s.serialize_field("epoch", &epoch)?;
        } else {
            s.skip_field("epoch")?;
        }
        s.serialize_field("changes", &self.changes)?;
        s.end()
    }
}

impl<'de> Deserialize<'de> for Changes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Changes, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default = "default_protocol")]
            protocol: u32,
            revision: u64,
            #[serde(default)]
            epoch: Option<i64>,
            #[serde(default)]
            changes: Vec<Change>,
        }
        let wire = Wire::deserialize(deserializer)?;
        check_protocol(wire.protocol).map_err(D::Error::custom)?;
        if let Some(c) = wire.changes.iter().find(|c| c.revision > wire.revision) {
            return Err(D::Error::custom(format!(
                "a change at revision {} in an answer at revision {}",
                c.revision, wire.revision
            )));
        }
        Ok(Changes {
            revision: wire.revision,
            epoch: wire.epoch,
            changes: wire.changes,
        })
    }
}

/// The wire form of [`Changes`] and [`Change`], for the OpenAPI document
/// (the `Serialize` impls above write exactly these fields).
#[cfg(feature = "openapi")]
pub mod schema {
    use guidon_engine::model::{Flag, Segment};

    use crate::{Kind, Op};

    /// `{protocol, revision, epoch, changes}`: the changes after a revision.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[schema(as = Changes)]
    #[allow(dead_code)]
    pub struct ChangesSchema {
        protocol: u32,
        revision: u64,
        /// The environment's creation time (ms).
        epoch: Option<i64>,
        changes: Vec<ChangeSchema>,
    }

    /// One key changed at one revision; `definition` is `null` for a delete.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[schema(as = Change)]
    #[allow(dead_code)]
    pub struct ChangeSchema {
        revision: u64,
        kind: Kind,
        key: String,
        op: Op,
        version: u64,
        definition: Option<DefinitionSchema>,
    }

    /// A flag or a segment, as `kind` says.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[serde(untagged)]
    #[schema(as = Definition)]
    #[allow(dead_code)]
    pub enum DefinitionSchema {
        Flag(Flag),
        Segment(Segment),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(key: &str) -> Definition {
        Definition::Flag(
            serde_json::from_str(&format!(r#"{{"key": "{key}", "enabled": true}}"#)).expect("flag"),
        )
    }

    #[test]
    fn changes_round_trip_in_the_documented_shape() {
        let upsert = Change::upsert(7, 2, flag("a"));
        let text = serde_json::to_string(&upsert).expect("json");
        assert_eq!(
            text,
            r#"{"revision":7,"kind":"flag","key":"a","op":"upsert","version":2,"definition":{"key":"a","enabled":true}}"#
        );
        assert_eq!(serde_json::from_str::<Change>(&text).expect("back"), upsert);
        let delete = Change::delete(8, Kind::Segment, "s", 3);
        let text = serde_json::to_string(&delete).expect("json");
        assert_eq!(
            text,
            r#"{"revision":8,"kind":"segment","key":"s","op":"delete","version":3,"definition":null}"#
        );
        assert_eq!(serde_json::from_str::<Change>(&text).expect("back"), delete);
    }

    #[test]
    fn inconsistent_changes_are_refused() {
        for (text, expected) in [
            (
                r#"{"revision":1,"kind":"flag","key":"a","op":"upsert","version":1,"definition":{"key":"b","enabled":true}}"#,
                "keyed \"b\"",
            ),
            (
                r#"{"revision":1,"kind":"flag","key":"a","op":"upsert","version":1}"#,
                "without a definition",
            ),
            (
                r#"{"revision":1,"kind":"flag","key":"a","op":"delete","version":1,"definition":{"key":"a","enabled":true}}"#,
                "a delete with a definition",
            ),
            (
                r#"{"revision":1,"kind":"segment","key":"a","op":"upsert","version":1,"definition":{"key":"a","enabled":true}}"#,
                "unknown field",
            ),
            (
                r#"{"revision":1,"kind":"rule","key":"a","op":"delete","version":1}"#,
                "unknown variant",
            ),
            (
                r#"{"revision":1,"kind":"flag","key":"x","op":"upsert","version":1,"definition":{"key":"x","enabled":"yes"}}"#,
                "invalid type",
            ),
        ] {
            let e = serde_json::from_str::<Change>(text).expect_err(text);
            assert!(e.to_string().contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn catch_up_groups_by_revision_and_refuses_newer_protocols() {
        let changes = Changes {
            revision: 9,
            epoch: Some(3),
            changes: vec![
                Change::upsert(5, 1, flag("a")),
                Change::upsert(5, 1, flag("b")),
                Change::delete(9, Kind::Flag, "a", 1),
            ],
        };
        let text = changes.to_json();
        assert!(
            text.starts_with(r#"{"protocol":1,"revision":9,"epoch":3,"#),
            "{text}"
        );
        let back = Changes::from_json(&text).expect("decodes");
        assert_eq!(back, changes);
        let updates = back.into_updates();
        assert_eq!(
            updates
                .iter()
                .map(|u| (u.revision, u.changes.len()))
                .collect::<Vec<_>>(),
            vec![(5, 2), (9, 1)]
        );
        let newer = text.replace(r#""protocol":1"#, r#""protocol":2"#);
        assert_eq!(
            Changes::from_json(&newer),
            Err(DecodeError::Protocol { theirs: 2, ours: 1 })
        );
        let ahead = r#"{"revision":3,"changes":[{"revision":4,"kind":"flag","key":"a","op":"delete","version":1}]}"#;
        assert!(matches!(
            Changes::from_json(ahead),
            Err(DecodeError::Malformed(_))
        ));
    }
}
