//! Request bodies: the server's body parsing (`body::json`,
//! `json_or_yaml`, `merge_patch`, then what each handler does before the
//! store: key check, definition parse, compile) for each route, with a
//! content type taken from the input. No input may panic, and a rejection
//! is always a 4xx.
#![no_main]

use guidon_server::fuzzing::{ROUTES, request_body};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some("application/json"),
    Some("application/yaml"),
    Some("application/merge-patch+json"),
    Some("text/plain"),
    Some("application/json; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    // [route][content type][body]
    let [route, content_type, body @ ..] = data else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()];
    if let Err((status, message)) = request_body(usize::from(*route) % ROUTES, content_type, body) {
        assert!(
            (400..500).contains(&status),
            "a body got {status}: {message}"
        );
    }
});
