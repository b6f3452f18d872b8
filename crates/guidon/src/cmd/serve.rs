//! `guidon serve`: the server (admin API, evaluation API, live streams,
//! metrics) until SIGTERM or Ctrl-C.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GUIDON_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// sqlite://PATH (created on first start) or postgres://…
    #[arg(
        long,
        env = "GUIDON_DATABASE_URL",
        default_value = "sqlite://guidon.db"
    )]
    database_url: String,
    /// The experiment event store: sqlite://PATH or postgres://…; by
    /// default a file next to --database-url's on SQLite (guidon.db →
    /// guidon-events.db), the same database on PostgreSQL (own tables, own
    /// pool of 4 connections).
    #[arg(long, env = "GUIDON_EVENTS_DATABASE_URL")]
    events_database_url: Option<String>,
    /// A secret that becomes an admin token (otherwise one is generated on
    /// first start and printed once).
    #[arg(long, env = "GUIDON_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// With --admin-password: the name of the person who is admin from the start.
    #[arg(long, env = "GUIDON_ADMIN_USER", default_value = "admin")]
    admin_user: String,
    /// That person's password (at least 8 characters): they exist, admin of
    /// every environment, and can sign in to the console at /.
    #[arg(long, env = "GUIDON_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Seconds between stream heartbeats.
    #[arg(long, env = "GUIDON_HEARTBEAT_SECS", default_value_t = 15)]
    heartbeat_secs: u64,
    /// Cache remote evaluation results (see BENCHMARKS.md for why it is off by default).
    #[arg(long, env = "GUIDON_EVAL_CACHE")]
    eval_cache: bool,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "GUIDON_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Milliseconds between polls of the database for other instances' changes.
    #[arg(long, env = "GUIDON_POLL_MS", default_value_t = 250)]
    poll_ms: u64,
    /// Most connections open at once (WebSockets included); past it new ones are closed.
    #[arg(long, env = "GUIDON_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a connection may take to send a request's headers (also the keep-alive idle timeout).
    #[arg(long, env = "GUIDON_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a request body may take to arrive whole (then 408).
    #[arg(long, env = "GUIDON_BODY_TIMEOUT_SECS", default_value_t = 30)]
    body_timeout_secs: u64,
    /// Seconds a write may wait for the client to read (then the connection is closed).
    #[arg(long, env = "GUIDON_WRITE_TIMEOUT_SECS", default_value_t = 30)]
    write_timeout_secs: u64,
    /// Kernel send buffer of each connection (SO_SNDBUF), in bytes: what a
    /// stream client that stopped reading can make the kernel hold (Linux
    /// doubles it). 0 leaves the kernel's autotuning.
    #[arg(long, env = "GUIDON_SEND_BUFFER_BYTES", default_value_t = guidon_server::DEFAULT_SEND_BUFFER)]
    send_buffer_bytes: usize,
    /// Also serve /metrics, without a token, on this address (for example
    /// a private interface a Prometheus scrapes); on the main address
    /// /metrics needs a metrics or an admin token.
    #[arg(long, env = "GUIDON_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, the server's
    /// certificate first); needs --tls-key. Reloaded on SIGHUP.
    #[arg(long, env = "GUIDON_TLS_CERT", value_name = "PATH")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "GUIDON_TLS_KEY", value_name = "PATH")]
    tls_key: Option<std::path::PathBuf>,
    /// An origin whose pages may call OFREP, evaluate and send events
    /// (CORS), such as https://app.example.com; repeat it for more. No
    /// wildcard, and never with credentials.
    #[arg(
        long = "cors-origin",
        env = "GUIDON_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Log format.
    #[arg(long, env = "GUIDON_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// Logs to stderr, at `GUIDON_LOG`'s level (`info`), as text or JSON.
pub(crate) fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GUIDON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: not in a file or a pipe,
    // and not with NO_COLOR set (https://no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // An empty value (GUIDON_TLS_CERT= in a unit file) means none.
    let given = |path: Option<std::path::PathBuf>| path.filter(|p| !p.as_os_str().is_empty());
    let tls = match (given(args.tls_cert), given(args.tls_key)) {
        (Some(cert), Some(key)) => Some(guidon_server::TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key (give both, or neither)"),
        (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert (give both, or neither)"),
    };
    init_logging(&args.log_format);
    let config = guidon_server::Config {
        listen: args.listen,
        database_url: args.database_url,
        events_database_url: args.events_database_url.filter(|u| !u.is_empty()),
        admin_token: args.admin_token,
        admin_user: args.admin_user,
        admin_password: args.admin_password,
        heartbeat: std::time::Duration::from_secs(args.heartbeat_secs.max(1)),
        eval_cache: args.eval_cache,
        max_body: args.max_body_bytes,
        poll_interval: std::time::Duration::from_millis(args.poll_ms.max(10)),
        connections: guidon_server::ConnLimits {
            max_connections: args.max_connections.max(1),
            header_timeout: std::time::Duration::from_secs(args.header_timeout_secs.max(1)),
            body_timeout: std::time::Duration::from_secs(args.body_timeout_secs.max(1)),
            write_timeout: std::time::Duration::from_secs(args.write_timeout_secs.max(1)),
            send_buffer: (args.send_buffer_bytes > 0).then_some(args.send_buffer_bytes),
        },
        metrics_listen: args.metrics_listen.filter(|a| !a.is_empty()),
        tls,
        cors_origins: args.cors_origins,
        ..guidon_server::Config::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let running = guidon_server::start(config).await?;
        if let Some(token) = &running.generated_admin_token {
            println!(
                "guidon: created an admin token (shown once, keep it): {token}\n\
                 guidon: use it as  Authorization: Bearer {token}"
            );
        }
        // Listening for SIGHUP before saying the server is up: a SIGHUP
        // sent then reloads, and never kills the process.
        #[cfg(unix)]
        if running.is_tls() {
            let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("listening for SIGHUP (the certificate reload)")?;
            tokio::spawn(reload_on_hangup(hangups, running.tls_reloader()));
        }
        let scheme = if running.is_tls() { "https" } else { "http" };
        println!("guidon: listening on {scheme}://{}", running.addr);
        println!(
            "guidon: the web console is at {scheme}://{}/ (people sign in there; GUIDON_ADMIN_PASSWORD makes the first admin)",
            running.addr
        );
        until_stopped(running).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Serves until SIGTERM or Ctrl-C, then shuts down gracefully (within
/// [`SHUTDOWN_DEADLINE`]).
pub(crate) async fn until_stopped(running: guidon_server::Running) -> anyhow::Result<()> {
    let stop = running.stopper();
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop();
        let _ = stopping_tx.send(());
    });
    // A graceful shutdown waits for connections to finish; a client
    // that stopped reading could hold it forever, so it has a deadline.
    let deadline = async {
        if stopping.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_DEADLINE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = running.wait() => result?,
        () = deadline => tracing::warn!(
            "connections still open {SHUTDOWN_DEADLINE:?} after shutdown began; exiting"
        ),
    }
    Ok(())
}

/// How long a graceful shutdown may wait for open connections.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// On each SIGHUP, the certificate and key are read again: served to new
/// connections, or, if they do not load, one error line and the previous
/// certificate kept.
#[cfg(unix)]
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    reload: impl Fn() -> Result<bool, guidon_server::TlsError>,
) {
    while hangups.recv().await.is_some() {
        match reload() {
            Ok(_) => tracing::info!("SIGHUP: TLS certificate reloaded"),
            Err(e) => tracing::error!(
                "SIGHUP: TLS certificate not reloaded, still serving the previous one: {e}"
            ),
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
