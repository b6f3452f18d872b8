//! Guidon's Rust SDK. The client keeps a local copy of an environment's
//! flags, evaluates them in-process (no network per call, no lock, no
//! allocation for the boolean and numeric helpers), follows every change
//! over the server's stream without ever skipping a revision, keeps
//! serving its last copy when the server is away, and sends experiment
//! events in the background.
//!
//! ```no_run
//! use guidon_client::{Client, Context};
//!
//! # async fn run() -> Result<(), guidon_client::ClientError> {
//! let client = Client::builder("http://127.0.0.1:8080", "gdn_sdk_token").build().await?;
//! let user = Context::new().with("user_id", "user_42").with("country", "CA");
//! if client.is_enabled("new_checkout", &user) {
//!     let layout = client.json_value("new_checkout", &user, serde_json::json!({}));
//!     println!("single-page checkout: {layout}");
//! }
//! client.track("purchase", &user, Some(99.99));
//! client.close().await?; // sends the queued events
//! # Ok(()) }
//! ```
//!
//! See [`sync`](crate::Transport) for how the client follows the server,
//! and `ARCHITECTURE.md` for the guarantees.

pub mod admin;
mod client;
mod error;
mod events;
mod offline;
mod state;
mod sync;
mod tls;
mod transport;

#[cfg(feature = "openfeature")]
pub mod openfeature;

pub use client::{Client, ClientBuilder, EvaluationDetails, SyncStats};
pub use error::ClientError;
pub use events::{EventOptions, EventStats};
pub use guidon_engine::{Context, ErrorCode, Evaluation, FlagFile, Reason, Timestamp};
pub use guidon_protocol::Document;
pub use state::Status;
pub use sync::{Applied, Transport};
