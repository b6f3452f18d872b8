//! An environment's flags at one revision: what SDKs download, what the
//! stream's snapshot carries, and what every process applies changes to.

use std::collections::HashMap;

use guidon_engine::model::{Flag, Segment};
use guidon_engine::{FlagFile, Snapshot, SnapshotOptions, ValidationError};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    Change, Changes, DecodeError, Definition, Edit, Kind, PROTOCOL_VERSION, check_protocol,
    default_protocol,
};

/// An environment's flags and segments at one revision, with each flag's
/// version. A flag file read from disk is a document without revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    /// The environment's revision; `None` for a flag file.
    pub revision: Option<u64>,
    /// The environment's creation time (ms since the Unix epoch): a deleted
    /// and re-created environment counts its revisions from 1 again, and
    /// this tells the two apart.
    pub epoch: Option<i64>,
    /// Each flag's version, as the store numbers them.
    pub versions: HashMap<String, u64>,
    pub file: FlagFile,
}

impl Document {
    /// A flag file as a document without revision.
    pub fn from_file(file: FlagFile) -> Document {
        Document {
            file,
            ..Document::default()
        }
    }

    /// Applies one change: the definition replaces (or joins) the one of
    /// its key, or the key is removed. Does not move `revision`.
    pub fn apply(&mut self, change: Change) {
        let Change {
            key, version, edit, ..
        } = change;
        match edit {
            Edit::Upsert(Definition::Flag(flag)) => {
                self.versions.insert(key, version);
                upsert(&mut self.file.flags, flag, |f| &f.key);
            }
            Edit::Upsert(Definition::Segment(segment)) => {
                upsert(&mut self.file.segments, segment, |s| &s.key);
            }
            Edit::Delete(Kind::Flag) => {
                self.file.flags.retain(|f| f.key != key);
                self.versions.remove(&key);
            }
            Edit::Delete(Kind::Segment) => self.file.segments.retain(|s| s.key != key),
        }
    }

    /// Applies every change of a catch-up answer (or of one update) and
    /// moves to its revision.
    pub fn advance(&mut self, revision: u64, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            self.apply(change);
        }
        self.revision = Some(revision);
    }

    /// [`Document::advance`] over a catch-up answer.
    pub fn catch_up(&mut self, changes: Changes) {
        self.advance(changes.revision, changes.changes);
    }

    /// Compiles for evaluation, with the revision and versions attached
    /// (they appear in every result's metadata).
    pub fn compile(&self) -> Result<Snapshot, ValidationError> {
        Snapshot::compile_with(
            &self.file,
            &SnapshotOptions {
                revision: self.revision,
                versions: self.versions.clone(),
            },
        )
    }

    /// Where `key` of `kind` sits in the file.
    pub fn position(&self, kind: Kind, key: &str) -> Option<usize> {
        match kind {
            Kind::Flag => self.file.flags.iter().position(|f| f.key == key),
            Kind::Segment => self.file.segments.iter().position(|s| s.key == key),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Document, DecodeError> {
        crate::decode(text)
    }

    /// Writes the document's fields into `map` (shared by the document and
    /// the stream's snapshot message).
    pub(crate) fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("protocol", &PROTOCOL_VERSION)?;
        map.serialize_entry("revision", &self.revision)?;
        if let Some(epoch) = self.epoch {
            map.serialize_entry("epoch", &epoch)?;
        }
        map.serialize_entry("versions", &self.versions)?;
        map.serialize_entry("flags", &self.file.flags)?;
        map.serialize_entry("segments", &self.file.segments)?;
        Ok(())
    }
}

fn upsert<T>(items: &mut Vec<T>, item: T, key: impl Fn(&T) -> &String) {
    match items.iter_mut().find(|i| key(i) == key(&item)) {
        Some(slot) => *slot = item,
        None => items.push(item),
    }
}

/// `{"protocol", "revision", "epoch", "versions", "flags", "segments"}`
/// (no `epoch` when unknown).
impl Serialize for Document {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.write_fields(&mut map)?;
        map.end()
    }
}

/// The document's fields as read, shared with the stream's snapshot; its
/// schema is the document's in the OpenAPI document.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Document))]
#[doc(hidden)]
pub struct WireDocument {
    #[serde(default = "default_protocol")]
    pub(crate) protocol: u32,
    #[serde(default)]
    pub(crate) revision: Option<u64>,
    #[serde(default)]
    pub(crate) epoch: Option<i64>,
    #[serde(default)]
    pub(crate) versions: HashMap<String, u64>,
    #[serde(default)]
    pub(crate) flags: Vec<Flag>,
    #[serde(default)]
    pub(crate) segments: Vec<Segment>,
}

impl WireDocument {
    pub(crate) fn into_document(self) -> Result<Document, DecodeError> {
        check_protocol(self.protocol)?;
        Ok(Document {
            revision: self.revision,
            epoch: self.epoch,
            versions: self.versions,
            file: FlagFile {
                flags: self.flags,
                segments: self.segments,
            },
        })
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Document, D::Error> {
        WireDocument::deserialize(deserializer)?
            .into_document()
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(json: &str) -> Definition {
        Definition::Flag(serde_json::from_str(json).expect("flag"))
    }

    #[test]
    fn changes_apply_in_place_and_versions_follow() {
        let mut doc = Document::default();
        doc.advance(
            1,
            [
                Change::upsert(1, 1, flag(r#"{"key": "x", "enabled": true}"#)),
                Change::upsert(1, 1, flag(r#"{"key": "y", "enabled": true}"#)),
            ],
        );
        doc.advance(
            2,
            [Change::upsert(
                2,
                2,
                flag(r#"{"key": "x", "enabled": false}"#),
            )],
        );
        assert_eq!(doc.revision, Some(2));
        assert_eq!(doc.versions["x"], 2);
        assert_eq!(doc.position(Kind::Flag, "x"), Some(0), "replaced in place");
        assert!(!doc.file.flags[0].enabled);
        doc.advance(3, [Change::delete(3, Kind::Flag, "x", 2)]);
        assert_eq!(doc.position(Kind::Flag, "x"), None);
        assert!(!doc.versions.contains_key("x"));
        let snapshot = doc.compile().expect("compiles");
        assert_eq!(snapshot.revision(), Some(3));
    }

    #[test]
    fn documents_round_trip_and_say_when_they_are_newer() {
        let mut doc = Document {
            epoch: Some(17),
            ..Document::default()
        };
        doc.advance(
            4,
            [Change::upsert(
                4,
                3,
                flag(r#"{"key": "a", "enabled": true}"#),
            )],
        );
        let text = doc.to_json();
        assert_eq!(
            text,
            r#"{"protocol":1,"revision":4,"epoch":17,"versions":{"a":3},"flags":[{"key":"a","enabled":true}],"segments":[]}"#
        );
        assert_eq!(Document::from_json(&text).expect("back"), doc);
        let newer = text.replace(r#""protocol":1"#, r#""protocol":9"#);
        let e = Document::from_json(&newer).expect_err("newer");
        assert_eq!(e, DecodeError::Protocol { theirs: 9, ours: 1 });
        assert!(e.to_string().contains("upgrade the client"), "{e}");
        // A newer protocol that also changed a field's shape is still
        // reported as a newer protocol, not as the field.
        let reshaped = newer.replace(r#""flags":[{"key":"a","enabled":true}]"#, r#""flags":7"#);
        assert_eq!(
            Document::from_json(&reshaped),
            Err(DecodeError::Protocol { theirs: 9, ours: 1 })
        );
        assert!(matches!(
            Document::from_json(r#"{"flags":7}"#),
            Err(DecodeError::Malformed(_))
        ));
    }
}
