//! What the live streams carry: a snapshot of the whole document, or one
//! revision's changes. SSE sends each as an event named by [`Event`] with
//! the revision as its id; WebSocket sends the same JSON as a text frame.

use std::collections::HashMap;
use std::sync::Arc;

use guidon_engine::model::{Flag, Segment};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::document::WireDocument;
use crate::{Change, DecodeError, Document, PROTOCOL_VERSION, default_protocol};

/// One revision's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub revision: u64,
    /// Every change of the revision, in (kind, key) order; each carries
    /// `revision`.
    pub changes: Vec<Change>,
}

/// A message of the live stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamMessage {
    /// The whole document: the first message of a stream that cannot
    /// resume, and what replaces everything when the environment was
    /// re-created or is too far behind to replay.
    Snapshot(Document),
    /// The next revision.
    Update(Update),
}

/// The SSE event name of a message (its `type` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    Snapshot,
    Update,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Snapshot => "snapshot",
            Event::Update => "update",
        }
    }
}

/// A message serialized once, to be sent to every client as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub event: Event,
    /// The SSE id: the revision the message brings the client to.
    pub revision: u64,
    pub json: Arc<str>,
}

impl StreamMessage {
    pub fn event(&self) -> Event {
        match self {
            StreamMessage::Snapshot(_) => Event::Snapshot,
            StreamMessage::Update(_) => Event::Update,
        }
    }

    /// The revision the message brings its reader to (0 for a document
    /// without one, which a server never sends).
    pub fn revision(&self) -> u64 {
        match self {
            StreamMessage::Snapshot(doc) => doc.revision.unwrap_or(0),
            StreamMessage::Update(u) => u.revision,
        }
    }

    pub fn encode(&self) -> Encoded {
        Encoded {
            event: self.event(),
            revision: self.revision(),
            json: serde_json::to_string(self).unwrap_or_default().into(),
        }
    }

    pub fn from_json(text: &str) -> Result<StreamMessage, DecodeError> {
        crate::decode(text)
    }
}

impl Update {
    pub fn encode(&self) -> Encoded {
        Update::encode_changes(self.revision, &self.changes)
    }

    /// Encodes the update of `revision` made of `changes`, without
    /// owning them.
    pub fn encode_changes(revision: u64, changes: &[Change]) -> Encoded {
        Encoded {
            event: Event::Update,
            revision,
            json: serde_json::to_string(&UpdateRef { revision, changes })
                .unwrap_or_default()
                .into(),
        }
    }
}

impl Document {
    /// This document as the stream's snapshot message (also the body of
    /// `GET /api/v1/sdk/flags`), encoded without copying the document.
    pub fn encode_snapshot(&self) -> Encoded {
        Encoded {
            event: Event::Snapshot,
            revision: self.revision.unwrap_or(0),
            json: serde_json::to_string(&SnapshotRef(self))
                .unwrap_or_default()
                .into(),
        }
    }
}

struct UpdateRef<'a> {
    revision: u64,
    changes: &'a [Change],
}

impl Serialize for UpdateRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("type", "update")?;
        map.serialize_entry("protocol", &PROTOCOL_VERSION)?;
        map.serialize_entry("revision", &self.revision)?;
        map.serialize_entry("changes", self.changes)?;
        map.end()
    }
}

struct SnapshotRef<'a>(&'a Document);

impl Serialize for SnapshotRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", "snapshot")?;
        self.0.write_fields(&mut map)?;
        map.end()
    }
}

/// `{"type": "snapshot", …the document}` or
/// `{"type": "update", "protocol", "revision", "changes"}`.
impl Serialize for StreamMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StreamMessage::Snapshot(doc) => SnapshotRef(doc).serialize(serializer),
            StreamMessage::Update(update) => UpdateRef {
                revision: update.revision,
                changes: &update.changes,
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for StreamMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StreamMessage, D::Error> {
        // One pass over the fields of either kind (serde's internally
        // tagged enums would buffer the whole message first).
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Type {
            Snapshot,
            Update,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "type")]
            kind: Type,
            #[serde(default = "default_protocol")]
            protocol: u32,
            #[serde(default)]
            revision: Option<u64>,
            #[serde(default)]
            epoch: Option<i64>,
            #[serde(default)]
            versions: HashMap<String, u64>,
            #[serde(default)]
            flags: Vec<Flag>,
            #[serde(default)]
            segments: Vec<Segment>,
            #[serde(default)]
            changes: Vec<Change>,
        }
        let w = Wire::deserialize(deserializer)?;
        let revision = w
            .revision
            .ok_or_else(|| D::Error::custom("a stream message without revision"))?;
        match w.kind {
            Type::Snapshot => WireDocument {
                protocol: w.protocol,
                revision: Some(revision),
                epoch: w.epoch,
                versions: w.versions,
                flags: w.flags,
                segments: w.segments,
            }
            .into_document()
            .map(StreamMessage::Snapshot)
            .map_err(D::Error::custom),
            Type::Update => {
                crate::check_protocol(w.protocol).map_err(D::Error::custom)?;
                if let Some(c) = w.changes.iter().find(|c| c.revision != revision) {
                    return Err(D::Error::custom(format!(
                        "an update to revision {revision} holds a change of revision {}",
                        c.revision
                    )));
                }
                Ok(StreamMessage::Update(Update {
                    revision,
                    changes: w.changes,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Definition, Kind};

    #[test]
    fn messages_encode_once_and_decode_back() {
        let mut doc = Document {
            epoch: Some(5),
            ..Document::default()
        };
        doc.advance(
            1,
            [Change::upsert(
                1,
                1,
                Definition::Flag(
                    serde_json::from_str(r#"{"key": "a", "enabled": true}"#).expect("flag"),
                ),
            )],
        );
        let snapshot = StreamMessage::Snapshot(doc);
        let encoded = snapshot.encode();
        assert_eq!((encoded.event.name(), encoded.revision), ("snapshot", 1));
        assert!(
            encoded
                .json
                .starts_with(r#"{"type":"snapshot","protocol":1,"revision":1,"epoch":5,"#),
            "{}",
            encoded.json
        );
        assert_eq!(
            StreamMessage::from_json(&encoded.json).expect("back"),
            snapshot
        );
        let StreamMessage::Snapshot(doc) = &snapshot else {
            unreachable!()
        };
        assert_eq!(doc.encode_snapshot(), encoded, "one encoding");
        // The document endpoint's body is the snapshot message: a document
        // reader takes it as it is.
        assert_eq!(&Document::from_json(&encoded.json).expect("document"), doc);

        let update = Update {
            revision: 2,
            changes: vec![Change::delete(2, Kind::Flag, "a", 1)],
        };
        let encoded = update.encode();
        assert_eq!(
            &*encoded.json,
            r#"{"type":"update","protocol":1,"revision":2,"changes":[{"revision":2,"kind":"flag","key":"a","op":"delete","version":1,"definition":null}]}"#
        );
        assert_eq!(
            StreamMessage::Update(update.clone()).encode(),
            encoded,
            "one encoding"
        );
        assert_eq!(
            StreamMessage::from_json(&encoded.json).expect("back"),
            StreamMessage::Update(update)
        );
    }

    #[test]
    fn bad_messages_are_refused_with_their_reason() {
        for (text, expected) in [
            (r#"{"type":"other","revision":1}"#, "unknown variant"),
            (r#"{"type":"update"}"#, "without revision"),
            (
                r#"{"type":"update","revision":3,"changes":[{"revision":2,"kind":"flag","key":"a","op":"delete","version":1}]}"#,
                "holds a change of revision 2",
            ),
            (
                r#"{"type":"update","protocol":3,"revision":3}"#,
                "protocol 3",
            ),
        ] {
            let e = StreamMessage::from_json(text).expect_err(text);
            assert!(e.to_string().contains(expected), "{text}: {e}");
        }
    }
}
