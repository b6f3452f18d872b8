//! `guidon edge`: a relay that follows an upstream Guidon and serves its
//! environments (OFREP, evaluate, the SDK endpoints and streams) near the
//! applications, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::serve::{init_logging, until_stopped};

#[derive(clap::Args)]
pub(crate) struct EdgeArgs {
    /// The upstream Guidon, such as http://guidon.internal:8080.
    #[arg(long, env = "GUIDON_UPSTREAM")]
    upstream: String,
    /// An admin token of the upstream (it follows the environments,
    /// verifies callers' tokens and delivers events).
    #[arg(long, env = "GUIDON_EDGE_TOKEN", hide_env_values = true)]
    token: String,
    /// An environment to relay; repeat it for more.
    #[arg(
        long = "env",
        env = "GUIDON_EDGE_ENVS",
        value_delimiter = ',',
        required = true
    )]
    envs: Vec<String>,
    /// Address to listen on.
    #[arg(long, env = "GUIDON_EDGE_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    /// Where the last snapshot of each environment (served when the
    /// upstream cannot be reached at start) and the events outbox are kept.
    #[arg(long, env = "GUIDON_EDGE_DATA_DIR", default_value = "guidon-edge")]
    data_dir: std::path::PathBuf,
    /// Seconds a token's verdict from the upstream is trusted: a token
    /// revoked upstream stops working at the edge within it.
    #[arg(long, env = "GUIDON_TOKEN_CACHE_TTL", default_value_t = 30)]
    token_cache_ttl: u64,
    /// Seconds between the edge's own stream heartbeats.
    #[arg(long, env = "GUIDON_HEARTBEAT_SECS", default_value_t = 15)]
    heartbeat_secs: u64,
    /// The upstream's --heartbeat-secs: its stream silent for two is dead.
    #[arg(long, env = "GUIDON_UPSTREAM_HEARTBEAT_SECS", default_value_t = 15)]
    upstream_heartbeat_secs: u64,
    /// Most connections open at once.
    #[arg(long, env = "GUIDON_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// An origin whose pages may call OFREP, evaluate and send events (CORS); repeatable.
    #[arg(
        long = "cors-origin",
        env = "GUIDON_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// The most events kept for the upstream while it cannot take them;
    /// past it batches are refused (503) rather than acknowledged.
    #[arg(
        long,
        env = "GUIDON_EDGE_MAX_BUFFERED_EVENTS",
        default_value_t = 1_000_000
    )]
    max_buffered_events: u64,
    /// Trust this CA certificate (PEM) for an https:// upstream, besides
    /// the system's roots.
    #[arg(long, env = "GUIDON_CA_CERT", value_name = "PATH")]
    ca_cert: Option<std::path::PathBuf>,
    /// Log format.
    #[arg(long, env = "GUIDON_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

pub(crate) fn run(args: EdgeArgs) -> anyhow::Result<ExitCode> {
    let ca_certificate_pem = match args.ca_cert.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => Some(
            std::fs::read(&path)
                .with_context(|| format!("--ca-cert {}: cannot read it", path.display()))?,
        ),
        None => None,
    };
    init_logging(&args.log_format);
    let config = guidon_server::edge::EdgeConfig {
        listen: args.listen,
        upstream: args.upstream,
        token: args.token,
        envs: args.envs.into_iter().filter(|e| !e.is_empty()).collect(),
        data_dir: args.data_dir,
        token_cache_ttl: Duration::from_secs(args.token_cache_ttl),
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        upstream_heartbeat: Duration::from_secs(args.upstream_heartbeat_secs.max(1)),
        connections: guidon_server::ConnLimits {
            max_connections: args.max_connections.max(1),
            ..guidon_server::ConnLimits::default()
        },
        cors_origins: args.cors_origins,
        ca_certificate_pem,
        max_buffered_events: args.max_buffered_events,
        ..guidon_server::edge::EdgeConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let running = guidon_server::edge::start(config).await?;
        println!("guidon: listening on http://{}", running.addr);
        until_stopped(running).await
    })?;
    Ok(ExitCode::SUCCESS)
}
