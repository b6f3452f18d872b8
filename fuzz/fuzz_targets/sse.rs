//! The SDK's SSE parser (`guidon_protocol::sse`, which the client's SSE
//! transport feeds): bytes fed whole, then cut at points taken from the
//! input, must give the same events and the same error, and never panic.
//! Each event's data goes through the SDK's message decoding.
#![no_main]

use guidon_protocol::StreamMessage;
use guidon_protocol::sse::{Item, SseParser};
use libfuzzer_sys::fuzz_target;

/// The largest event (the SDK's default is larger; a small one reaches
/// the size check).
const MAX_EVENT: usize = 1024;

fn parse(chunks: &[&[u8]]) -> (Vec<Item>, bool) {
    let mut parser = SseParser::new(MAX_EVENT);
    let mut out = Vec::new();
    for chunk in chunks {
        if parser.feed(chunk, &mut out).is_err() {
            return (out, true);
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    // [n][n cut lengths][stream]
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (cuts, stream) = rest.split_at(n);
    let whole = parse(&[stream]);
    let mut chunks = Vec::new();
    let mut left = stream;
    for &cut in cuts {
        let (chunk, tail) = left.split_at(usize::from(cut).min(left.len()));
        chunks.push(chunk);
        left = tail;
    }
    chunks.push(left);
    let cut = parse(&chunks);
    assert_eq!(whole, cut, "cutting the stream changed what it parses to");
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(whole, parse(&bytewise), "byte by byte, another result");
    for item in &whole.0 {
        if let Item::Event(event) = item {
            let _ = StreamMessage::from_json(&event.data);
        }
    }
});
