//! The `guidon` command: wiring only. Parsing flags and reading files happens
//! here; every decision is the engine's. The admin commands (`flags`,
//! `envs`, `token`) talk to a server through `remote`.

mod demo;
mod experiments;
mod remote;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use guidon_engine::{Context, Evaluation, Explanation, FlagFile, Snapshot, Timestamp};

#[derive(Parser)]
#[command(
    name = "guidon",
    version,
    about = "Guidon: feature flags and experiments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a flag file; print a one-line summary, or every problem with its path.
    Validate {
        /// The flag file (JSON, or YAML when it ends in .yaml/.yml; `-` reads JSON from stdin).
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Evaluate one flag of a flag file for one or many contexts; one JSON result per line.
    Eval {
        /// The flag file (JSON, or YAML when it ends in .yaml/.yml; `-` reads JSON from stdin).
        #[arg(long, short)]
        file: PathBuf,
        /// The flag to evaluate.
        #[arg(long)]
        flag: String,
        /// The context, a JSON object such as '{"user_id":"user_42","country":"CA"}'.
        #[arg(
            long,
            conflicts_with = "contexts",
            required_unless_present = "contexts"
        )]
        context: Option<String>,
        /// A file of contexts, one JSON object per line (JSON Lines).
        #[arg(long)]
        contexts: Option<PathBuf>,
        /// Add every step taken and every condition judged to each result.
        #[arg(long)]
        explain: bool,
        /// The evaluation time (RFC 3339); defaults to now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Run the server: admin API, evaluation API (OFREP), live streams, metrics.
    Serve(ServeArgs),
    /// Experiment results from a server: per variant, lift with its interval, p-value, chance to win, warnings.
    Experiments(experiments::ExperimentsArgs),
    /// The seed's checkout experiment end to end on a throwaway database: 1,000 users, their
    /// purchases sent as events, and the statistics. No server to set up.
    Demo,
    /// Read and change the flags of an environment on a server.
    Flags(FlagsArgs),
    /// List, create and delete a server's environments.
    Envs(EnvsArgs),
    /// Create, list and revoke a server's API tokens.
    Token(TokenArgs),
}

/// How to reach the server; accepted before or after the subcommand.
#[derive(clap::Args, Debug, Clone)]
struct RemoteArgs {
    /// The server's URL.
    #[arg(
        long,
        global = true,
        env = "GUIDON_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    server: String,
    /// An API token (an admin token for anything but reading flags).
    #[arg(long, global = true, env = "GUIDON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON answer (pretty) instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Args)]
struct FlagsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: FlagsCommand,
}

#[derive(Subcommand)]
enum FlagsCommand {
    /// List the flags of an environment.
    List {
        /// The environment.
        #[arg(long)]
        env: String,
    },
    /// Show one flag with its version.
    Get {
        /// The flag's key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
    },
    /// Create or replace one flag from a file holding one flag object.
    Set {
        /// The environment.
        #[arg(long)]
        env: String,
        /// The flag (JSON, or YAML when it ends in .yaml/.yml; `-` reads JSON from stdin).
        #[arg(long, short)]
        file: PathBuf,
        /// Only if the flag is still at this version (0: only if it does not exist yet).
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
    },
    /// Delete a flag.
    Delete {
        /// The flag's key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
        /// Only if the flag is still at this version.
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
    },
    /// Turn a flag on if it is off, off if it is on; refused if it changed
    /// meanwhile.
    Toggle {
        /// The flag's key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
        /// Only if the flag is still at this version (default: the version just read).
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
    },
    /// Every change of a flag: version, revision, who, when, what.
    History {
        /// The flag's key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
    },
    /// Make a flag what it was at an earlier version (a new version).
    Revert {
        /// The flag's key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
        /// The version to go back to.
        #[arg(long)]
        version: u64,
    },
    /// Print the environment's whole flag file (flags and segments).
    Export {
        /// The environment.
        #[arg(long)]
        env: String,
        /// YAML instead of JSON.
        #[arg(long)]
        yaml: bool,
    },
    /// Replace the environment's flags and segments with a flag file's, in
    /// one revision (whatever the file lacks is deleted).
    Import {
        /// The environment.
        #[arg(long)]
        env: String,
        /// The flag file (JSON, or YAML when it ends in .yaml/.yml; `-` reads JSON from stdin).
        #[arg(long, short)]
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct EnvsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: EnvsCommand,
}

#[derive(Subcommand)]
enum EnvsCommand {
    /// List the environments with their revisions.
    List,
    /// Create an environment.
    Create {
        /// Its name.
        name: String,
    },
    /// Delete an environment (with --json, prints {"deleted": NAME}).
    Delete {
        /// Its name.
        name: String,
        /// Delete it even if it still holds flags or segments.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
struct TokenArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret (shown once).
    Create {
        /// A name for it (who or what uses it).
        name: String,
        /// admin: everything; sdk: read and evaluate one environment.
        #[arg(long, value_parser = ["admin", "sdk"])]
        role: String,
        /// The environment of an sdk token.
        #[arg(long)]
        env: Option<String>,
    },
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token (with --json, prints {"revoked": NAME}).
    Revoke {
        /// Its name.
        name: String,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
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
    /// A secret that becomes an admin token (otherwise one is generated on
    /// first start and printed once).
    #[arg(long, env = "GUIDON_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
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
    /// Log format.
    #[arg(long, env = "GUIDON_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of causes, outermost first.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("guidon: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Experiments(args) => experiments::run(args),
        Command::Demo => demo::run(),
        Command::Flags(args) => remote::flags(&args.remote, args.command),
        Command::Envs(args) => remote::envs(&args.remote, args.command),
        Command::Token(args) => remote::token(&args.remote, args.command),
        Command::Validate { file } => validate(&file),
        Command::Eval {
            file,
            flag,
            context,
            contexts,
            explain,
            now,
        } => {
            let now = match now {
                Some(text) => text
                    .parse::<Timestamp>()
                    .map_err(|e| anyhow!("--now {text:?} is not an RFC 3339 timestamp: {e}"))?,
                None => Timestamp::now(),
            };
            let stdin = Path::new("-");
            if file == stdin && contexts.as_deref() == Some(stdin) {
                bail!("--file - and --contexts - cannot both read standard input");
            }
            let snapshot = load_snapshot(&file)?;
            if !snapshot.contains(&flag) {
                bail!(
                    "unknown flag {flag:?} in {} (it has {})",
                    file.display(),
                    describe_keys(&snapshot)
                );
            }
            let eval = Evaluator {
                snapshot: &snapshot,
                flag: &flag,
                explain,
                now,
            };
            let mut out = std::io::stdout().lock();
            match (context, contexts) {
                (Some(text), _) => {
                    let ctx = Context::from_json_str(&text).context("--context")?;
                    eval.print(&ctx, &mut out)?;
                }
                (None, Some(path)) => {
                    let reader = open_lines(&path)?;
                    for (n, line) in reader.lines().enumerate() {
                        let line = line.with_context(|| format!("reading {}", path.display()))?;
                        if line.trim().is_empty() {
                            continue;
                        }
                        let ctx = Context::from_json_str(&line)
                            .with_context(|| format!("{} line {}", path.display(), n + 1))?;
                        eval.print(&ctx, &mut out)?;
                    }
                }
                (None, None) => bail!("give --context JSON or --contexts FILE.jsonl"),
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(serde::Serialize)]
struct Explained<'a> {
    #[serde(flatten)]
    result: &'a Evaluation<'a>,
    explain: &'a Explanation,
}

struct Evaluator<'a> {
    snapshot: &'a Snapshot,
    flag: &'a str,
    explain: bool,
    now: Timestamp,
}

impl Evaluator<'_> {
    fn print(&self, ctx: &Context, out: &mut impl Write) -> anyhow::Result<()> {
        // Serialized from the structs, not through a map, so the fields keep
        // the order of flag-format.md §7.
        let line = if self.explain {
            let (result, explain) = self.snapshot.explain(self.flag, ctx, self.now);
            serde_json::to_string(&Explained {
                result: &result,
                explain: &explain,
            })?
        } else {
            serde_json::to_string(&self.snapshot.evaluate(self.flag, ctx, self.now))?
        };
        writeln!(out, "{line}")?;
        Ok(())
    }
}

fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    let file = read_flag_file(path)?;
    match Snapshot::compile(&file) {
        Ok(snapshot) => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{}: valid, {} flag{} and {} segment{}",
                path.display(),
                snapshot.len(),
                plural(snapshot.len()),
                file.segments.len(),
                plural(file.segments.len())
            )
            .and_then(|()| out.flush())
            .context("writing to standard output")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            let n = err.problems.len();
            eprintln!("{}: {n} problem{}", path.display(), plural(n));
            for p in &err.problems {
                eprintln!("{p}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn describe_keys(snapshot: &Snapshot) -> String {
    const SHOWN: usize = 10;
    let keys: Vec<&str> = snapshot.flag_keys().take(SHOWN).collect();
    match snapshot.len() {
        0 => "no flags".to_owned(),
        n if n > SHOWN => format!("{} and {} more", keys.join(", "), n - SHOWN),
        _ => keys.join(", "),
    }
}

fn load_snapshot(path: &Path) -> anyhow::Result<Snapshot> {
    let file = read_flag_file(path)?;
    Snapshot::compile(&file).map_err(|err| {
        let lines: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        anyhow!(
            "{} is not a valid flag file ({} problem{}): {}",
            path.display(),
            lines.len(),
            plural(lines.len()),
            lines.join("; ")
        )
    })
}

fn read_flag_file(path: &Path) -> anyhow::Result<FlagFile> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading the flag file from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    // Editors on some systems save a byte-order mark; it is not JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let parsed = if yaml {
        FlagFile::from_yaml_str(text)
    } else {
        FlagFile::from_json_str(text)
    };
    parsed.with_context(|| format!("{} is not a valid flag file", path.display()))
}

fn open_lines(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Box::new(std::io::BufReader::new(file)))
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GUIDON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let config = guidon_server::Config {
        listen: args.listen,
        database_url: args.database_url,
        admin_token: args.admin_token,
        heartbeat: std::time::Duration::from_secs(args.heartbeat_secs.max(1)),
        eval_cache: args.eval_cache,
        max_body: args.max_body_bytes,
        poll_interval: std::time::Duration::from_millis(args.poll_ms.max(10)),
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
        println!("guidon: listening on http://{}", running.addr);
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
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// How long a graceful shutdown may wait for open connections.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

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
