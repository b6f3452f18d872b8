//! Request bodies: the server's body parsing (the media-type
//! check and `body::parse_now`, then what each handler does before the
//! store: key check, definition parse, compile) for each route, with a
//! content type taken from the input. No input may panic, and a rejection
//! is always a 4xx.
#![no_main]

use guidon_server::fuzzing::request_input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // [route][content type][body]
    if let Some(Err((status, message))) = request_input(data) {
        assert!(
            (400..500).contains(&status),
            "a body got {status}: {message}"
        );
    }
});
