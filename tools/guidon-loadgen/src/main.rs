//! `guidon-loadgen`: the load generator and stream fan-out harness behind
//! the server figures of `BENCHMARKS.md`. It starts nothing itself: it is
//! given a running server's URL and tokens (`benches/server.sh` starts one).
//!
//! - `ofrep`: single-flag OFREP evaluations over HTTP/1.1 keep-alive, each
//!   with a context of its own; requests/s and latency percentiles. With
//!   `--api unleash-frontend` the same load against Unleash (Edge)'s
//!   frontend API, to measure a peer with the same generator.
//! - `fanout`: N SSE stream clients, then flag changes; time until every
//!   client has each change, and the server's memory per connection. With
//!   `--processes P` the clients are held by P worker processes (a process
//!   may open 20,000 files here).

mod fanout;
mod http;
mod ofrep;
mod stats;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "guidon-loadgen",
    version,
    about = "Load generator for guidon serve"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// OFREP single-flag evaluations: requests/s and latency.
    Ofrep(ofrep::Args),
    /// SSE fan-out: time for one change to reach every stream client.
    Fanout(fanout::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ofrep(args) => ofrep::run(args),
        Command::Fanout(args) => fanout::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guidon-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A tokio runtime of `threads` workers (one: the current thread).
pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}
