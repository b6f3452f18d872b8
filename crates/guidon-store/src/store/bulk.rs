//! Replacing a whole environment with a flag file (GitOps), atomically,
//! under one revision.

use std::collections::HashMap;
use std::sync::Arc;

use guidon_engine::FlagFile;
use guidon_protocol::{Change, Definition, Document, Kind, Op};
use serde_json::Value;
use sqlx::Row;

use super::write::{Cached, Record, compile, next_revision};
use super::{Commit, Store, now_ms, to_u64};
use crate::error::StoreError;

/// What [`Store::replace_all`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replaced {
    /// The revision of the whole replacement; when nothing differed, the
    /// environment's unchanged revision.
    pub revision: u64,
    /// Every key that changed, upserts first; empty when nothing differed.
    pub changes: Vec<Applied>,
}

/// One key changed by a bulk replace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub kind: Kind,
    pub key: String,
    pub op: Op,
    pub version: u64,
}

/// A stored definition: its last version, and its text when live.
struct Existing {
    version: u64,
    live: Option<String>,
}

impl Store {
    /// Makes the environment exactly `file` (GitOps): every flag and segment
    /// that differs is upserted, every one not in the file deleted, all
    /// under one revision, atomically. The whole file is validated; when
    /// nothing differs, nothing is written and the revision stays.
    pub async fn replace_all(
        &self,
        env: &str,
        file: &FlagFile,
        actor: &str,
    ) -> Result<Replaced, StoreError> {
        let writer = self.writers.get(env);
        let mut cached = writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let result: Result<_, StoreError> = async {
            let (revision, epoch) = next_revision(&mut tx, env).await?;
            let rows = sqlx::query(
                "SELECT kind, key, version, definition, deleted FROM definitions WHERE env = $1",
            )
            .bind(env)
            .fetch_all(&mut *tx)
            .await?;
            let mut existing: HashMap<(Kind, String), Existing> = HashMap::new();
            for row in &rows {
                let key: String = row.try_get("key")?;
                let kind = Kind::parse(&row.try_get::<String, _>("kind")?)
                    .ok_or_else(|| super::corrupt(env, Kind::Flag, &key, "unknown kind"))?;
                let deleted: i32 = row.try_get("deleted")?;
                let live = if deleted == 0 {
                    Some(row.try_get::<String, _>("definition")?)
                } else {
                    None
                };
                let version = to_u64(row.try_get("version")?);
                existing.insert((kind, key), Existing { version, live });
            }

            let mut changes = Vec::new();
            let mut records = Vec::new();
            let mut versions = HashMap::new();
            let wanted = file
                .flags
                .iter()
                .cloned()
                .map(Definition::Flag)
                .chain(file.segments.iter().cloned().map(Definition::Segment));
            for definition in wanted {
                let (kind, key) = (definition.kind(), definition.key().to_owned());
                let old = existing.remove(&(kind, key.clone()));
                let (last, live) = old.map_or((0, None), |e| (e.version, e.live));
                let text = definition.to_json();
                let same = live.as_deref().is_some_and(|old| same_json(old, &text));
                let version = if same { last } else { last + 1 };
                if kind == Kind::Flag {
                    versions.insert(key.clone(), version);
                }
                if !same {
                    records.push((kind, key, Op::Upsert, version, live, Some(text)));
                    changes.push(Change::upsert(revision, version, definition));
                }
            }
            let mut gone: Vec<_> = existing
                .into_iter()
                .filter_map(|((kind, key), e)| e.live.map(|text| (kind, key, e.version, text)))
                .collect();
            gone.sort();
            for (kind, key, version, text) in gone {
                records.push((kind, key.clone(), Op::Delete, version, Some(text), None));
                changes.push(Change::delete(revision, kind, key, version));
            }
            if changes.is_empty() {
                return Ok(None);
            }
            let document = Document {
                revision: Some(revision),
                epoch: Some(epoch),
                versions,
                file: file.clone(),
            };
            let (document, compiled) = compile(document).await?;
            let snapshot = compiled.map_err(StoreError::Invalid)?;
            let at = now_ms();
            for (kind, key, op, version, before, after) in records {
                let record = Record {
                    kind,
                    key: &key,
                    op,
                    version,
                    before,
                    after,
                };
                self.record(&mut tx, env, revision, &record, actor, at)
                    .await?;
            }
            self.notify(&mut tx, env, revision).await?;
            Ok(Some((revision, epoch, at, changes, document, snapshot)))
        }
        .await;
        match result {
            Ok(None) => {
                // Nothing differs: give the revision back. What this process
                // knew of the environment is still true.
                tx.rollback().await?;
                Ok(Replaced {
                    revision: self.revision(env).await?,
                    changes: Vec::new(),
                })
            }
            Err(e) => {
                // As in `finish`: a failed rollback changes nothing.
                let _ = tx.rollback().await;
                Err(e)
            }
            Ok(Some((revision, epoch, at_ms, mut changes, document, snapshot))) => {
                let applied = changes
                    .iter()
                    .map(|c| Applied {
                        kind: c.kind(),
                        key: c.key().to_owned(),
                        op: c.op(),
                        version: c.version(),
                    })
                    .collect();
                changes.sort_by(|a, b| (a.kind(), a.key()).cmp(&(b.kind(), b.key())));
                let document = Arc::new(document);
                let commit = Commit {
                    env: env.to_owned(),
                    epoch,
                    revision,
                    changes,
                    actor: actor.to_owned(),
                    at_ms,
                    document: document.clone(),
                    snapshot: Arc::new(snapshot),
                };
                self.commit_and_announce(tx, commit).await?;
                *cached = Some(Cached::new(epoch, revision, document));
                Ok(Replaced {
                    revision,
                    changes: applied,
                })
            }
        }
    }
}

/// Whether two definitions' texts are the same JSON (stored text may come
/// from an older writer that ordered or spaced it otherwise).
fn same_json(a: &str, b: &str) -> bool {
    a == b
        || serde_json::from_str::<Value>(a)
            .ok()
            .zip(serde_json::from_str::<Value>(b).ok())
            .is_some_and(|(a, b)| a == b)
}
