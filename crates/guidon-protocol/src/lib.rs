//! Guidon's wire protocol: one definition of every shape that crosses a
//! process boundary between the store, the server, the SDK, the edge relay
//! and the CLI. `docs/protocol.md` describes it with an example of each
//! message.
//!
//! - [`Document`]: an environment's flags at one revision, with each flag's
//!   version (`GET /api/v1/sdk/flags`, and the stream's `snapshot`).
//! - [`Change`]: one key changed at one revision, its kind and op as enums
//!   and its definition typed ([`Definition`]).
//! - [`StreamMessage`]: what the SSE and WebSocket streams carry, encoded
//!   once per revision into an [`Encoded`] frame shared by every client.
//! - [`Changes`]: the catch-up answer (`GET /api/v1/sdk/changes?since=N`).
//! - [`Document::apply`] and [`Document::compile`]: applying a change to a
//!   flag file, and compiling an environment at its revision with its
//!   versions. Every process does both through these two functions.
//! - [`api`]: the admin API's shapes (environments, history, tokens, the
//!   error body).
//! - [`catalogue`]: the metric catalogue's and experiments' definitions
//!   and their validation.
//! - [`sse`]: the parser of the SSE stream's framing (bytes in, events
//!   out), which every reader of the stream uses.
//!
//! Every message carries `protocol` ([`PROTOCOL_VERSION`]). A reader that
//! meets a newer protocol than it speaks fails with
//! [`DecodeError::Protocol`], which says which side to upgrade, rather
//! than with whatever field it could not read.
//!
//! The crate is serde and parsing only: no I/O, no clock, no HTTP.

pub mod api;
pub mod catalogue;
mod change;
mod document;
mod message;
pub mod sse;

#[cfg(feature = "openapi")]
pub use change::schema;
pub use change::{Change, Changes, Definition, Edit, Kind, Op};
pub use document::{Document, WireDocument};
pub use message::{Encoded, Event, StreamMessage, Update};

/// The protocol this crate speaks. Raised when a message changes in a way
/// an older reader would misread; additive fields do not raise it.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The sender speaks a newer protocol than this reader.
    #[error(
        "the server speaks Guidon protocol {theirs}, this client protocol {ours}: upgrade the client"
    )]
    Protocol { theirs: u32, ours: u32 },
    /// Not a message of this protocol: bad JSON, a missing field, a change
    /// whose definition does not match its key.
    #[error("{0}")]
    Malformed(String),
}

pub(crate) fn default_protocol() -> u32 {
    1
}

/// Checks a message's `protocol` field.
pub(crate) fn check_protocol(theirs: u32) -> Result<(), DecodeError> {
    if theirs > PROTOCOL_VERSION {
        Err(DecodeError::Protocol {
            theirs,
            ours: PROTOCOL_VERSION,
        })
    } else {
        Ok(())
    }
}

/// Decodes `text`; when that fails, tells a newer protocol (the likely
/// cause) from plain garbage.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    match serde_json::from_str::<T>(text) {
        Ok(value) => Ok(value),
        Err(e) => {
            #[derive(serde::Deserialize)]
            struct Peek {
                #[serde(default = "default_protocol")]
                protocol: u32,
            }
            if let Ok(peek) = serde_json::from_str::<Peek>(text) {
                check_protocol(peek.protocol)?;
            }
            Err(DecodeError::Malformed(e.to_string()))
        }
    }
}
