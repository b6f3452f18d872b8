//! Entry points for the fuzz targets in `fuzz/` (README's "Fuzzing"): the
//! server's handling of request bodies and event batches, without a store
//! or a listener, through the same functions the handlers call. Not an API
//! (hidden from the docs); each returns what the handler would have
//! answered, so a target can check it.

use axum::http::{HeaderMap, HeaderValue, header};
use guidon_engine::model::{Flag, FlagFile, Segment};
use guidon_engine::{Snapshot, Timestamp};
use serde_json::Value;

use crate::admin::{NewEnv, NewToken, Promote, Revert, keyed, parse_definition};
use crate::body::{self, Accepts};
use crate::error::ApiError;
use crate::eval::{EvaluateRequest, OfrepRequest};

/// The routes whose bodies [`request_body`] parses, by number.
pub const ROUTES: usize = 11;

/// An answer's status code and message.
pub type Refusal = (u16, String);

fn refusal(e: ApiError) -> Refusal {
    (e.status().as_u16(), e.to_string())
}

/// The `Content-Type`s a fuzz input picks from (its second byte).
pub const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some("application/json"),
    Some("application/yaml"),
    Some("application/merge-patch+json"),
    Some("text/plain"),
    Some("application/json; charset=utf-8"),
];

/// A `request_body` fuzz input, `[route][content type][body]`, through
/// [`request_body`]; `None` for an input shorter than its two header bytes.
/// The fuzz target and the corpus replay share this reading.
pub fn request_input(input: &[u8]) -> Option<Result<(), Refusal>> {
    let [route, content_type, body @ ..] = input else {
        return None;
    };
    let content_type = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()];
    Some(request_body(
        usize::from(*route) % ROUTES,
        content_type,
        body,
    ))
}

/// Parses `bytes` as the body of route number `route % ROUTES` with the
/// given `Content-Type`, as its handler does before any store access: `Ok`
/// when the handler would go on, or the status and message it would answer.
pub fn request_body(route: usize, content_type: Option<&str>, bytes: &[u8]) -> Result<(), Refusal> {
    parse_body(route, content_type, bytes).map_err(refusal)
}

fn parse_body(route: usize, content_type: Option<&str>, bytes: &[u8]) -> Result<(), ApiError> {
    let mut headers = HeaderMap::new();
    if let Some(value) = content_type.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    match route % ROUTES {
        // POST /api/v1/envs/{env}/evaluate
        0 => body::parse_now::<EvaluateRequest>(Accepts::Json.format(&headers)?, bytes).map(drop),
        // POST /ofrep/v1/evaluate/flags[/{key}]
        1 => body::parse_now::<OfrepRequest>(Accepts::Json.format(&headers)?, bytes).map(drop),
        // POST /api/v1/envs
        2 => body::parse_now::<NewEnv>(Accepts::Json.format(&headers)?, bytes).map(drop),
        // POST …/history/revert
        3 => body::parse_now::<Revert>(Accepts::Json.format(&headers)?, bytes).map(drop),
        // POST …/promote
        4 => body::parse_now::<Promote>(Accepts::Json.format(&headers)?, bytes).map(drop),
        // POST /api/v1/tokens
        5 => body::parse_now::<NewToken>(Accepts::Json.format(&headers)?, bytes).map(drop),
        // PUT /api/v1/envs/{env}/flags (bulk): parsed, then compiled
        6 => {
            let file: FlagFile = body::parse_now(Accepts::JsonOrYaml.format(&headers)?, bytes)?;
            Snapshot::compile(&file)
                .map(drop)
                .map_err(ApiError::Validation)
        }
        // PUT /api/v1/envs/{env}/flags/{key}
        7 => {
            let value = keyed(
                body::parse_now(Accepts::JsonOrYaml.format(&headers)?, bytes)?,
                "fuzzed",
            )?;
            let flag: Flag = parse_definition(value)?;
            let file = FlagFile {
                flags: vec![flag],
                segments: Vec::new(),
            };
            Snapshot::compile(&file)
                .map(drop)
                .map_err(ApiError::Validation)
        }
        // PUT /api/v1/envs/{env}/segments/{key}
        8 => {
            let value = keyed(
                body::parse_now(Accepts::JsonOrYaml.format(&headers)?, bytes)?,
                "fuzzed",
            )?;
            parse_definition::<Segment>(value).map(drop)
        }
        // PATCH …/flags/{key} and …/segments/{key}: the patch applied to
        // an empty flag, then parsed as a flag
        9 => {
            let patch: Value = body::parse_now(Accepts::MergePatch.format(&headers)?, bytes)?;
            let mut document = serde_json::json!({"key": "fuzzed", "enabled": false});
            crate::patch::merge_patch(&mut document, &patch);
            parse_definition::<Flag>(keyed(document, "fuzzed")?).map(drop)
        }
        // POST /api/v1/events (the batch's shape; events: [`event_batch`])
        _ => body::parse_now::<Value>(Accepts::Json.format(&headers)?, bytes).map(drop),
    }
}

/// Checks an event batch body as `POST /api/v1/events` does, against
/// `file` (compiled) at `now`: the number of events accepted and the
/// rejections as answered, or the batch's own error.
pub fn event_batch(
    file: &FlagFile,
    snapshot: &Snapshot,
    bytes: &[u8],
    now: Timestamp,
) -> Result<(usize, Vec<Value>), Refusal> {
    let (valid, rejected) =
        crate::experiments::check_batch(bytes, snapshot, &file.flags, now.as_millisecond())
            .map_err(refusal)?;
    Ok((valid.len(), rejected))
}
