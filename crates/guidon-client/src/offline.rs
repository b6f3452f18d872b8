//! Flags from files: a bootstrap flag file, `Client::from_file`, and the
//! last snapshot the client saved on disk (written atomically: a temporary
//! file renamed over the old one, at most once per second).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use guidon_engine::{FlagFile, Format};
use serde_json::Value;
use tokio::sync::watch;

use crate::error::ClientError;
use guidon_protocol::Document;

/// Reads a flag file (JSON, or YAML for `.yaml`/`.yml`) or a document saved
/// by the SDK (`{"revision", "versions", "flags", "segments"}`).
pub(crate) fn read_document(path: &Path) -> Result<Document, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClientError::Io {
        path: path.to_owned(),
        source,
    })?;
    let origin = path.display().to_string();
    parse_document(&text, Format::of_path(path), &origin)
}

pub(crate) fn parse_document(
    text: &str,
    format: Format,
    origin: &str,
) -> Result<Document, ClientError> {
    let parse_error = |message: String| ClientError::Parse {
        origin: origin.to_owned(),
        message,
    };
    if format == Format::Yaml {
        let file = FlagFile::parse(text, format).map_err(|e| parse_error(e.to_string()))?;
        return Ok(Document::from_file(file));
    }
    // The engine's parser holds the text to its bounds (no repeated key, no
    // nesting deeper than `guidon_engine::MAX_DEPTH`) before anything reads it.
    let value: Value = format.parse(text).map_err(|e| parse_error(e.to_string()))?;
    let is_document = value
        .as_object()
        .is_some_and(|o| o.contains_key("revision") || o.contains_key("versions"));
    if is_document {
        return Document::from_json(text).map_err(|e| parse_error(e.to_string()));
    }
    let file = FlagFile::from_json_value(value).map_err(|e| parse_error(e.to_string()))?;
    Ok(Document {
        file,
        ..Document::default()
    })
}

/// Writes `doc` to `path` atomically.
pub(crate) fn write_document(path: &Path, doc: &Document) -> std::io::Result<()> {
    let text = doc.to_json();
    let mut tmp: PathBuf = path.to_owned();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guidon-snapshot.json".into());
    tmp.set_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Saves each new document, at most once per `every`, and the last one
/// when the client stops.
pub(crate) async fn save_loop(
    path: PathBuf,
    mut docs: watch::Receiver<Option<Arc<Document>>>,
    every: Duration,
) {
    loop {
        let changed = docs.changed().await;
        let doc = docs.borrow_and_update().clone();
        if let Some(doc) = doc {
            let target = path.clone();
            let written = tokio::task::spawn_blocking(move || write_document(&target, &doc)).await;
            match written {
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "guidon: cannot save the snapshot");
                }
                Err(e) => tracing::warn!(error = %e, "guidon: snapshot writer failed"),
                Ok(Ok(())) => {}
            }
        }
        if changed.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_files_and_documents() {
        let file = parse_document(
            r#"{"flags": [{"key": "a", "enabled": true}]}"#,
            Format::Json,
            "t",
        )
        .expect("flag file");
        assert_eq!(file.revision, None);
        assert_eq!(file.file.flags.len(), 1);
        let doc = parse_document(
            r#"{"revision": 7, "versions": {"a": 2}, "flags": [{"key": "a", "enabled": true}], "segments": []}"#,
            Format::Json,
            "t",
        )
        .expect("document");
        assert_eq!(doc.revision, Some(7));
        assert_eq!(doc.versions["a"], 2);
        let yaml = parse_document("flags:\n  - key: a\n    enabled: true\n", Format::Yaml, "t")
            .expect("yaml");
        assert_eq!(yaml.file.flags[0].key, "a");
        assert!(parse_document(r#"{"flags": [{"key": "a"}]}"#, Format::Json, "t").is_err());
        assert!(parse_document("{", Format::Json, "t").is_err());
    }

    /// A flag file repeating a key is refused in either format, naming the
    /// key and where it is, not read as the last value.
    #[test]
    fn a_repeated_key_is_refused() {
        let json = r#"{"flags": [{"key": "a", "enabled": false, "enabled": true}]}"#;
        let yaml = "flags:\n  - key: a\n    enabled: false\n    enabled: true\n";
        for (text, format) in [(json, Format::Json), (yaml, Format::Yaml)] {
            let err = parse_document(text, format, "t").expect_err("duplicate");
            let message = err.to_string();
            assert!(message.contains(r#"duplicate key "enabled""#), "{message}");
            assert!(message.contains("flags[0]"), "{message}");
        }
        let deep = format!("{{\"flags\": {}{}}}", "[".repeat(100), "]".repeat(100));
        let err = parse_document(&deep, Format::Json, "t").expect_err("deep");
        assert!(err.to_string().contains("64"), "{err}");
    }
}
