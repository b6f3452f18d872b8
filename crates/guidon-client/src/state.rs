//! What the client holds: the environment's flag document (as the server
//! sends it), the Snapshot compiled from it behind an `ArcSwap` (readers
//! never lock), the sync status, and the listeners told of changes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use guidon_engine::model::{Flag, Operator, Segment};
use guidon_engine::{FlagFile, Snapshot};
use guidon_protocol::Document;

/// The flags whose results may differ between `old` and `new`: those
/// added, removed or redefined, those whose conditions use a changed
/// segment (through nested segments too), and those whose prerequisites
/// changed, transitively. Sorted.
pub(crate) fn changed_flags(old: &FlagFile, new: &FlagFile) -> Vec<String> {
    let old_segments: HashMap<&str, &Segment> =
        old.segments.iter().map(|s| (s.key.as_str(), s)).collect();
    let new_segments: HashMap<&str, &Segment> =
        new.segments.iter().map(|s| (s.key.as_str(), s)).collect();
    let mut segments: HashSet<&str> = HashSet::new();
    for (key, s) in &new_segments {
        if old_segments.get(key) != Some(s) {
            segments.insert(key);
        }
    }
    for key in old_segments.keys() {
        if !new_segments.contains_key(key) {
            segments.insert(key);
        }
    }
    // Segments that use a changed segment changed too.
    loop {
        let before = segments.len();
        for s in &new.segments {
            if !segments.contains(s.key.as_str())
                && s.rules
                    .iter()
                    .flat_map(|r| &r.conditions)
                    .any(|c| uses_segment(c, &segments))
            {
                segments.insert(&s.key);
            }
        }
        if segments.len() == before {
            break;
        }
    }
    let old_flags: HashMap<&str, &Flag> = old.flags.iter().map(|f| (f.key.as_str(), f)).collect();
    let new_keys: HashSet<&str> = new.flags.iter().map(|f| f.key.as_str()).collect();
    let mut flags: HashSet<&str> = HashSet::new();
    for f in &new.flags {
        let redefined = old_flags.get(f.key.as_str()) != Some(&f);
        let segment_changed = f
            .rules
            .iter()
            .flat_map(|r| &r.conditions)
            .any(|c| uses_segment(c, &segments));
        if redefined || segment_changed {
            flags.insert(&f.key);
        }
    }
    for key in old_flags.keys() {
        if !new_keys.contains(key) {
            flags.insert(key);
        }
    }
    loop {
        let before = flags.len();
        for f in &new.flags {
            if !flags.contains(f.key.as_str())
                && f.prerequisites
                    .iter()
                    .any(|p| flags.contains(p.flag.as_str()))
            {
                flags.insert(&f.key);
            }
        }
        if flags.len() == before {
            break;
        }
    }
    let mut out: Vec<String> = flags.into_iter().map(str::to_owned).collect();
    out.sort();
    out
}

fn uses_segment(c: &guidon_engine::model::Condition, segments: &HashSet<&str>) -> bool {
    matches!(c.operator, Operator::InSegment | Operator::NotInSegment)
        && c.values
            .iter()
            .any(|v| v.as_str().is_some_and(|k| segments.contains(k)))
}

/// The sync status, as applications and OpenFeature see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// No flags yet: no answer from the server and no bootstrap.
    Starting,
    /// Serving the server's current flags, and following its changes.
    Ready,
    /// Serving a copy that may be out of date: a bootstrap file, a saved
    /// snapshot, or the last copy while the server cannot be reached.
    /// Evaluations then carry the reason `STALE`.
    Stale,
    /// The server refuses this client (token, environment) or sends flags
    /// this SDK cannot use; the last copy, if any, is still served (`STALE`).
    Error,
}

impl Status {
    fn to_u8(self) -> u8 {
        match self {
            Status::Starting => 0,
            Status::Ready => 1,
            Status::Stale => 2,
            Status::Error => 3,
        }
    }

    fn from_u8(v: u8) -> Status {
        match v {
            1 => Status::Ready,
            2 => Status::Stale,
            3 => Status::Error,
            _ => Status::Starting,
        }
    }
}

/// The flags evaluations read: one compiled Snapshot with what it was
/// compiled from. Immutable; replaced whole.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) document: Arc<Document>,
}

impl Published {
    pub(crate) fn new(document: Arc<Document>, snapshot: Arc<Snapshot>) -> Published {
        Published { snapshot, document }
    }

    pub(crate) fn empty() -> Published {
        let document = Arc::new(Document::default());
        let snapshot =
            Snapshot::compile(&FlagFile::default()).expect("an empty flag file compiles");
        Published::new(document, Arc::new(snapshot))
    }
}

/// Runs a listener; a panic in it is logged and does not stop the sync.
fn guarded(kind: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("guidon: a {kind} listener panicked");
    }
}

type ChangeListener = Arc<dyn Fn(&[String]) + Send + Sync>;
type StatusListener = Arc<dyn Fn(Status) + Send + Sync>;

/// Shared by the client handles and the background tasks.
pub(crate) struct Shared {
    pub(crate) current: ArcSwap<Published>,
    /// Why the client last went into `Error`, for people.
    last_error: Mutex<Option<String>>,
    status: AtomicU8,
    status_tx: tokio::sync::watch::Sender<Status>,
    change_listeners: Mutex<Vec<ChangeListener>>,
    status_listeners: Mutex<Vec<StatusListener>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("revision", &self.current.load().document.revision)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(published: Published, status: Status) -> Shared {
        Shared {
            current: ArcSwap::from_pointee(published),
            last_error: Mutex::new(None),
            status: AtomicU8::new(status.to_u8()),
            status_tx: tokio::sync::watch::channel(status).0,
            change_listeners: Mutex::new(Vec::new()),
            status_listeners: Mutex::new(Vec::new()),
        }
    }

    #[inline]
    pub(crate) fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Evaluations are marked `STALE` unless the client is `Ready`.
    #[inline]
    pub(crate) fn serving_stale(&self) -> bool {
        self.status.load(Ordering::Acquire) != Status::Ready.to_u8()
    }

    pub(crate) fn set_status(&self, status: Status) {
        let old = self.status.swap(status.to_u8(), Ordering::AcqRel);
        if old == status.to_u8() {
            return;
        }
        tracing::debug!(from = ?Status::from_u8(old), to = ?status, "guidon client status");
        self.status_tx.send_replace(status);
        let listeners: Vec<StatusListener> = self
            .status_listeners
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        for listener in listeners {
            guarded("status", || listener(status));
        }
    }

    /// Goes into `Error`, saying why.
    pub(crate) fn fail(&self, reason: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(reason);
        }
        self.set_status(Status::Error);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|l| l.clone())
    }

    pub(crate) fn watch_status(&self) -> tokio::sync::watch::Receiver<Status> {
        self.status_tx.subscribe()
    }

    pub(crate) fn on_change(&self, listener: ChangeListener) {
        if let Ok(mut l) = self.change_listeners.lock() {
            l.push(listener);
        }
    }

    pub(crate) fn on_status(&self, listener: StatusListener) {
        if let Ok(mut l) = self.status_listeners.lock() {
            l.push(listener);
        }
    }

    /// Publishes a new document (compiled by the caller) and tells the
    /// listeners which flags changed.
    pub(crate) fn publish(&self, document: Arc<Document>, snapshot: Arc<Snapshot>) {
        let old = self.current.load_full();
        let changed = changed_flags(&old.document.file, &document.file);
        self.current
            .store(Arc::new(Published::new(document, snapshot)));
        if changed.is_empty() {
            return;
        }
        let listeners: Vec<ChangeListener> = self
            .change_listeners
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        for listener in listeners {
            guarded("change", || listener(&changed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> FlagFile {
        FlagFile::from_json_str(json).expect("flag file")
    }

    #[test]
    fn changed_flags_follow_segments_and_prerequisites() {
        let old = file(
            r#"{"flags": [
                {"key": "a", "enabled": true},
                {"key": "b", "enabled": true, "prerequisites": [{"flag": "a"}]},
                {"key": "c", "enabled": true, "rules": [{"conditions": [{"operator": "in_segment", "values": ["outer"]}], "serve": {"enabled": false}}]},
                {"key": "d", "enabled": true},
                {"key": "gone", "enabled": true}
            ], "segments": [
                {"key": "inner", "included": ["u1"]},
                {"key": "outer", "rules": [{"conditions": [{"operator": "in_segment", "values": ["inner"]}]}]}
            ]}"#,
        );
        let mut new = old.clone();
        new.flags.retain(|f| f.key != "gone");
        assert_eq!(changed_flags(&old, &new), vec!["gone"]);
        new.flags[0].enabled = false;
        assert_eq!(changed_flags(&old, &new), vec!["a", "b", "gone"]);
        let mut seg = old.clone();
        seg.segments[0].included.push(serde_json::json!("u2"));
        assert_eq!(changed_flags(&old, &seg), vec!["c"]);
        assert!(changed_flags(&old, &old).is_empty());
    }
}
