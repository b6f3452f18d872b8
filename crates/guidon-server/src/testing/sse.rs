//! Reading a stream response's events, with the protocol's SSE parser.

use std::collections::VecDeque;
use std::time::Duration;

pub use guidon_protocol::sse::SseEvent;
use guidon_protocol::sse::{Item, SseParser};
use serde_json::Value;

/// The largest event a test reads (a whole document in a snapshot).
const MAX_EVENT: usize = 64 << 20;

/// Reads Server-Sent Events from a response (`GET /api/v1/sdk/stream`):
/// events in order, comments (heartbeats) skipped.
pub struct SseReader {
    response: reqwest::Response,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    /// The server ended the stream (as opposed to a wait running out).
    pub closed: bool,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            parser: SseParser::new(MAX_EVENT),
            ready: VecDeque::new(),
            closed: false,
        }
    }

    /// The next event, or `None` when the stream ends (then
    /// [`SseReader::closed`]) or `wait` passes. An event cut off by the end
    /// of the stream is never returned.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.closed {
                return None;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            match chunk {
                Ok(Some(chunk)) => {
                    let mut items = Vec::new();
                    self.parser
                        .feed(&chunk, &mut items)
                        .expect("the stream's events are within 64 MiB");
                    self.ready
                        .extend(items.into_iter().filter_map(|item| match item {
                            Item::Event(event) => Some(event),
                            Item::Comment => None,
                        }));
                }
                Ok(None) | Err(_) => self.closed = true,
            }
        }
    }
}

/// An event's data as JSON (every message of Guidon's streams is).
pub trait SseEventJson {
    fn json(&self) -> Value;
}

impl SseEventJson for SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}
