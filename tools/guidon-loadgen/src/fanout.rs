//! `guidon-loadgen fanout`: N SSE clients on `/api/v1/sdk/stream`, then a
//! series of flag changes; for each change, how long until every client has
//! the event carrying its revision.
//!
//! A client is a task with a raw `TcpStream`: it writes the request by hand,
//! decodes the chunked body and scans it for `id: N` lines; an event counts
//! as received at the blank line that ends it (when an SSE client would
//! dispatch it). Latency is from just before the change's `PUT` is written
//! to that moment, so it includes the write's commit in the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::http::{Framing, Server};
use crate::stats::{CpuSample, Samples, cpu_nanos, open_files_limit, status_kib};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    server: String,
    /// Servers the stream clients connect to instead (edges relaying
    /// `--server`), repeatable: worker process `i` connects to the
    /// `i mod n`-th; the changes are still written to `--server`, so the
    /// times run from the upstream's write to the last client. Needs
    /// `--processes` of at least their number.
    #[arg(long)]
    stream_server: Vec<String>,
    /// The token the stream clients present: an sdk token, or an admin
    /// token with --env.
    #[arg(long, env = "GUIDON_LOADGEN_TOKEN", hide_env_values = true)]
    token: String,
    /// An admin token, to write the changes.
    #[arg(long, env = "GUIDON_LOADGEN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// The environment the changes are written to (the sdk token's).
    #[arg(long)]
    env: String,
    /// The flag each change rewrites (created if missing; its rollout
    /// percentage and description change each time).
    #[arg(long, default_value = "fanout_probe")]
    flag: String,
    /// Stream clients to connect.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Changes to time, one after another.
    #[arg(long, default_value_t = 10)]
    changes: usize,
    /// Milliseconds between the end of one change's delivery and the next change.
    #[arg(long, default_value_t = 500)]
    pause_ms: u64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// The server's process id, to read its resident memory (VmRSS) from
    /// /proc before and after the clients connect.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connect with `Last-Event-ID` set to the current revision, so the
    /// server sends no snapshot (to see what the snapshot costs in memory).
    #[arg(long)]
    resume: bool,
    /// Seconds to wait for every client to get a change (or to connect).
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Runtime worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A name for this run, repeated in the output.
    #[arg(long, default_value = "fanout")]
    label: String,
    /// Also print the summary as one JSON line (prefixed `RESULT `).
    #[arg(long)]
    json: bool,
    /// Before measuring, make the environment hold this many other flags
    /// (one bulk replace), so each change is an upsert into an environment
    /// of that size.
    #[arg(long, default_value_t = 0)]
    seed_flags: usize,
    /// Print the summary only, not a line per change.
    #[arg(long)]
    quiet: bool,
    /// Hold the clients in this many worker processes (this process then
    /// only writes the changes and gathers the reports): a process may
    /// open at most the hard limit of open files (20,000 here), and the
    /// server's clients are counted against its own limit too. Workers run
    /// on the CPUs this process may use (`taskset` applies to them).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Internal: be one of `--processes`' workers (connect the clients,
    /// report on standard output, make no change).
    #[arg(long, hide = true)]
    worker: bool,
    /// Open each stream as the second request of its connection, after a
    /// `GET /healthz`, as a client with a connection pool may: the server
    /// then serves it through hyper, not through its own stream path (a
    /// comparison of the two in one build).
    #[arg(long)]
    second_request: bool,
    /// Internal: the revision a worker's clients resume from (`--resume`).
    #[arg(long, hide = true, default_value_t = 0)]
    resume_from: u64,
}

/// What a client tells the coordinator.
#[derive(Debug)]
enum Report {
    /// Connected; the snapshot's revision.
    Ready { revision: u64 },
    /// An event with this id was received (complete).
    Got { revision: u64, at: Instant },
    /// The client failed (before or after being ready).
    Failed { ready: bool, error: String },
}

pub(crate) fn run(args: Args) -> Result<()> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.processes == 0 {
        bail!("--processes must be at least 1");
    }
    if !args.stream_server.is_empty() && args.processes < args.stream_server.len().max(2) {
        bail!(
            "--stream-server needs --processes of at least the number of stream servers (and 2): the workers hold the clients"
        );
    }
    // The clients this process holds itself.
    let own = if args.processes > 1 { 0 } else { args.clients };
    let per_worker = if args.processes > 1 {
        args.clients.div_ceil(args.processes)
    } else {
        0
    };
    let (soft, hard) = open_files_limit()?;
    let needed = own.max(per_worker) as u64 + 64;
    if soft < needed {
        bail!(
            "{} clients need about {needed} open files per process; a process may open {soft} (hard limit {hard}): \
             raise it first with `ulimit -n {}`{}",
            own.max(per_worker),
            if hard >= needed { needed } else { hard },
            if hard < needed {
                ", or split them with --processes"
            } else {
                ""
            }
        );
    }
    let server = Server::parse(&args.server)?;
    let runtime = crate::runtime(args.threads)?;
    if args.worker {
        return runtime.block_on(worker(args, server));
    }
    runtime.block_on(fanout(args, server))
}

/// The stream request every client sends.
fn stream_request(args: &Args, server: &Server, resume_from: u64) -> Arc<[u8]> {
    let mut request = format!(
        "GET /api/v1/sdk/stream HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n",
        server.host, args.token
    );
    request.push_str(&format!("X-Guidon-Environment: {}\r\n", args.env));
    if args.resume {
        request.push_str(&format!("Last-Event-ID: {resume_from}\r\n"));
    }
    request.push_str("\r\n");
    Arc::from(request.into_bytes())
}

/// Starts `--clients` clients, at most `--connect-concurrency`
/// handshakes at a time, reporting to `tx`.
fn spawn_clients(
    server: &Arc<Server>,
    request: &Arc<[u8]>,
    args: &Args,
    tx: &mpsc::UnboundedSender<Report>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let resume = args.resume;
    let first: Option<Arc<[u8]>> = args.second_request.then(|| {
        Arc::from(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.host).into_bytes())
    });
    (0..args.clients)
        .map(|_| {
            let (server, gate, tx, request, first) = (
                server.clone(),
                gate.clone(),
                tx.clone(),
                request.clone(),
                first.clone(),
            );
            tokio::spawn(async move {
                let mut ready = false;
                let opened = Opening {
                    first: first.as_deref(),
                    request: &request,
                    resume,
                };
                if let Err(e) = client(&server, &gate, opened, &tx, &mut ready).await {
                    let _ = tx.send(Report::Failed {
                        ready,
                        error: format!("{e:#}"),
                    });
                }
            })
        })
        .collect()
}

/// A worker process: its clients' reports as lines on standard output
/// (`R revision`, `G revision unix-nanos`, `F ready error`), written in
/// batches (flushed whenever no report is waiting). The time of an event
/// is the realtime clock's, the one clock processes share; the
/// coordinator turns it back into its own monotonic time.
async fn worker(args: Args, server: Server) -> Result<()> {
    use std::io::Write as _;
    let server = Arc::new(server);
    let request = stream_request(&args, &server, args.resume_from);
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let now = Instant::now();
    let wall = SystemTime::now();
    let _handles = spawn_clients(&server, &request, &args, &tx);
    drop(tx);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Some(report) = rx.recv().await {
        let mut report = Some(report);
        while let Some(r) = report.take().or_else(|| rx.try_recv().ok()) {
            match r {
                Report::Ready { revision } => writeln!(out, "R {revision}")?,
                Report::Got { revision, at } => {
                    let at = wall + at.saturating_duration_since(now);
                    let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
                    writeln!(out, "G {revision} {nanos}")?;
                }
                Report::Failed { ready, error } => {
                    writeln!(out, "F {} {}", u8::from(ready), error.replace('\n', " "))?;
                }
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// The worker processes of `--processes`, and the threads that read their
/// reports into `tx`.
struct Workers {
    children: Vec<std::process::Child>,
}

impl Workers {
    fn start(args: &Args, resume_from: u64, tx: &mpsc::UnboundedSender<Report>) -> Result<Workers> {
        let exe = std::env::current_exe().context("finding this program")?;
        let mut children = Vec::new();
        let mut left = args.clients;
        for i in 0..args.processes {
            let count = left.div_ceil(args.processes - i);
            left -= count;
            let mut command = std::process::Command::new(&exe);
            let streams_from = if args.stream_server.is_empty() {
                &args.server
            } else {
                &args.stream_server[i % args.stream_server.len()]
            };
            command
                .args([
                    "fanout",
                    "--worker",
                    "--server",
                    streams_from,
                    "--env",
                    &args.env,
                ])
                .args(["--clients", &count.to_string()])
                .args([
                    "--connect-concurrency",
                    &(args.connect_concurrency.div_ceil(args.processes)).to_string(),
                ])
                .args(["--resume-from", &resume_from.to_string()])
                .env("GUIDON_LOADGEN_TOKEN", &args.token)
                .env("GUIDON_LOADGEN_ADMIN_TOKEN", &args.admin_token)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped());
            if args.resume {
                command.arg("--resume");
            }
            if args.second_request {
                command.arg("--second-request");
            }
            let mut child = command.spawn().context("starting a worker process")?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("a worker without stdout"))?;
            let tx = tx.clone();
            std::thread::spawn(move || read_worker(stdout, &tx));
            children.push(child);
        }
        Ok(Workers { children })
    }

    fn pids(&self) -> Vec<String> {
        self.children.iter().map(|c| c.id().to_string()).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads a worker's report lines into `tx`, its events' realtime-clock
/// times turned into this process's monotonic time.
fn read_worker(stdout: std::process::ChildStdout, tx: &mpsc::UnboundedSender<Report>) {
    use std::io::BufRead as _;
    let lines = std::io::BufReader::with_capacity(64 * 1024, stdout).lines();
    for line in lines {
        let Ok(line) = line else { break };
        let mut words = line.splitn(3, ' ');
        let report = match (words.next(), words.next(), words.next()) {
            (Some("R"), Some(revision), _) => revision
                .parse()
                .ok()
                .map(|revision| Report::Ready { revision }),
            (Some("G"), Some(revision), Some(nanos)) => {
                match (revision.parse(), nanos.parse::<u64>()) {
                    (Ok(revision), Ok(nanos)) => {
                        let then = UNIX_EPOCH + Duration::from_nanos(nanos);
                        let age = SystemTime::now().duration_since(then).unwrap_or_default();
                        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                        Some(Report::Got { revision, at })
                    }
                    _ => None,
                }
            }
            (Some("F"), Some(ready), error) => Some(Report::Failed {
                ready: ready == "1",
                error: error.unwrap_or_default().to_owned(),
            }),
            _ => None,
        };
        let report = report.unwrap_or_else(|| Report::Failed {
            ready: false,
            error: format!("a worker wrote {line:?}"),
        });
        if tx.send(report).is_err() {
            break;
        }
    }
}

fn rss_kib(pid: Option<u32>) -> Result<Option<u64>> {
    pid.map(|p| status_kib(&p.to_string(), "VmRSS")).transpose()
}

async fn fanout(args: Args, server: Server) -> Result<()> {
    let server = Arc::new(server);
    // The writer's connection, and the probe flag before anything is measured.
    let mut admin = server.connect().await?;
    let auth = format!("Bearer {}", args.admin_token);
    let path = format!("/api/v1/envs/{}/flags/{}", args.env, args.flag);
    let put = |i: usize| {
        let body = json!({
            "key": args.flag,
            "description": format!("fan-out change {i}"),
            "enabled": true,
            "rollout": {"percentage": (i * 7) % 101},
        })
        .to_string();
        server.request("PUT", &path, &[("Authorization", &auth)], Some(&body))
    };
    if args.seed_flags > 0 {
        let flags: Vec<Value> = (0..args.seed_flags)
            .map(|i| {
                json!({"key": format!("seed_{i:05}"), "enabled": i % 2 == 0,
                       "rollout": {"percentage": i % 100}})
            })
            .collect();
        let body = json!({"flags": flags}).to_string();
        let bulk = format!("/api/v1/envs/{}/flags", args.env);
        let head = admin
            .roundtrip(&server.request("PUT", &bulk, &[("Authorization", &auth)], Some(&body)))
            .await?;
        if !(200..300).contains(&head.status) {
            bail!(
                "seeding {} flags answered {}: {}",
                args.seed_flags,
                head.status,
                String::from_utf8_lossy(&admin.body)
            );
        }
    }
    let head = admin.roundtrip(&put(0)).await?;
    if !(200..300).contains(&head.status) {
        bail!(
            "writing {path} answered {}: {}",
            head.status,
            String::from_utf8_lossy(&admin.body)
        );
    }
    let first_revision = revision_of(&admin.body)?;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(args.server_pid)?;
    let self_before = status_kib("self", "VmRSS")?;

    // Connect every client, a bounded number at a time.
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let request = stream_request(&args, &server, first_revision);
    let connect_started = Instant::now();
    let (handles, workers) = if args.processes > 1 {
        (
            Vec::new(),
            Some(Workers::start(&args, first_revision, &tx)?),
        )
    } else {
        let handles = spawn_clients(&server, &request, &args, &tx);
        (handles, None)
    };
    drop(tx);
    // This process, then its workers: the harness.
    let harness: Vec<String> = std::iter::once("self".to_owned())
        .chain(workers.iter().flat_map(Workers::pids))
        .collect();
    let timeout = Duration::from_secs(args.timeout_secs);
    let (mut connected, mut failed) = (0_usize, 0_usize);
    let mut errors: HashMap<String, usize> = HashMap::new();
    let mut early: Vec<(u64, Instant)> = Vec::new();
    let mut snapshot_revisions: HashMap<u64, usize> = HashMap::new();
    let deadline = connect_started + timeout + Duration::from_secs(args.clients as u64 / 100);
    while connected + failed < args.clients {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Report::Ready { revision })) => {
                connected += 1;
                *snapshot_revisions.entry(revision).or_default() += 1;
            }
            Ok(Some(Report::Failed { ready, error })) => {
                if ready {
                    connected = connected.saturating_sub(1);
                }
                failed += 1;
                *errors.entry(error).or_default() += 1;
            }
            Ok(Some(Report::Got { revision, at })) => early.push((revision, at)),
            Ok(None) => break,
            Err(_) => break,
        }
    }
    let connect_time = connect_started.elapsed();
    println!(
        "{}: {connected} of {} clients connected in {:.2} s ({failed} failed)",
        args.label,
        args.clients,
        connect_time.as_secs_f64()
    );
    print_errors(&errors);
    if connected == 0 {
        bail!("no client connected");
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = rss_kib(args.server_pid)?;
    let self_connected = harness_kib(&harness)?;
    let per_conn = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) * 1024.0 / connected as f64),
        _ => None,
    };
    let server_per_conn = per_conn(rss_before, rss_connected);
    if let (Some(b), Some(a), Some(per)) = (rss_before, rss_connected, server_per_conn) {
        println!(
            "  server VmRSS {:.1} MiB before, {:.1} MiB with {connected} clients: {:.0} bytes ({:.1} KiB) per connection",
            b as f64 / 1024.0,
            a as f64 / 1024.0,
            per,
            per / 1024.0
        );
    }
    println!(
        "  harness VmRSS {:.1} MiB before, {:.1} MiB with the clients",
        self_before as f64 / 1024.0,
        self_connected as f64 / 1024.0
    );

    // The changes.
    let mut all = Samples::default();
    let mut puts = Samples::default();
    let mut server_cpu_total = 0.0;
    let mut per_change = Vec::new();
    let mut by_revision: HashMap<u64, Vec<Instant>> = HashMap::new();
    for (revision, at) in early {
        by_revision.entry(revision).or_default().push(at);
    }
    let mut alive = connected;
    // The server (when known), then the harness.
    let pids: Vec<String> = args
        .server_pid
        .map(|p| p.to_string())
        .into_iter()
        .chain(harness.iter().cloned())
        .collect();
    let harness_at = usize::from(args.server_pid.is_some());
    // A fresh writer's connection: connecting many clients may take longer
    // than the server keeps an idle connection open.
    admin = server.connect().await?;
    let cpu_before = CpuSample::take(&pids)?;
    let changes_started = Instant::now();
    for i in 1..=args.changes {
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        let request = put(i);
        let server_cpu0 = args
            .server_pid
            .map(|p| cpu_nanos(&p.to_string()))
            .transpose()?;
        let self_cpu0 = harness_nanos(&harness)?;
        let t0 = Instant::now();
        let head = admin.roundtrip(&request).await?;
        let put_rtt = t0.elapsed();
        if !(200..300).contains(&head.status) {
            bail!(
                "change {i}: PUT answered {}: {}",
                head.status,
                String::from_utf8_lossy(&admin.body)
            );
        }
        let revision = revision_of(&admin.body)?;
        let deadline = Instant::now() + timeout;
        loop {
            let have = by_revision.get(&revision).map_or(0, Vec::len);
            if have >= alive {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Report::Got { revision, at })) => {
                    by_revision.entry(revision).or_default().push(at);
                }
                Ok(Some(Report::Failed { error, .. })) => {
                    alive = alive.saturating_sub(1);
                    *errors.entry(error).or_default() += 1;
                }
                Ok(Some(Report::Ready { .. })) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let elapsed = t0.elapsed();
        let server_cpu = match (server_cpu0, args.server_pid) {
            (Some(a), Some(p)) => Some(cpu_nanos(&p.to_string())?.saturating_sub(a) as f64 / 1e6),
            _ => None,
        };
        let self_cpu = harness_nanos(&harness)?.saturating_sub(self_cpu0) as f64 / 1e6;
        let times = by_revision.remove(&revision).unwrap_or_default();
        let mut samples = Samples::with_capacity(times.len());
        for at in &times {
            samples.push(at.saturating_duration_since(t0));
        }
        let row = json!({
            "change": i,
            "revision": revision,
            "received": samples.len(),
            "missing": alive.saturating_sub(samples.len()),
            "put_ms": put_rtt.as_secs_f64() * 1e3,
            "p50_ms": samples.percentile_ms(50.0),
            "p99_ms": samples.percentile_ms(99.0),
            "max_ms": samples.max_ms(),
            "wall_ms": elapsed.as_secs_f64() * 1e3,
            "server_cpu_ms": server_cpu,
            "harness_cpu_ms": self_cpu,
        });
        puts.push(put_rtt);
        server_cpu_total += server_cpu.unwrap_or(0.0);
        if !args.quiet {
            println!(
                "  change {i} (revision {revision}): {} of {alive} clients, PUT {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; CPU in {:.0} ms: server {}, harness {self_cpu:.1} ms",
                samples.len(),
                put_rtt.as_secs_f64() * 1e3,
                samples.percentile_ms(50.0),
                samples.percentile_ms(99.0),
                samples.max_ms(),
                elapsed.as_secs_f64() * 1e3,
                server_cpu.map_or_else(|| "?".to_owned(), |c| format!("{c:.1} ms")),
            );
        }
        all.extend(samples);
        per_change.push(row);
        // Older revisions' stragglers are of no further use.
        by_revision.retain(|r, _| *r > revision);
    }
    let cpu = cpu_before.until(
        &CpuSample::take(&pids)?,
        changes_started.elapsed().as_secs_f64(),
    );
    let server_cores = if args.server_pid.is_some() {
        cpu.processes.first().copied().flatten()
    } else {
        None
    };
    let harness_cores: f64 = cpu.processes[harness_at..].iter().flatten().sum();
    println!(
        "  CPU during the changes (cores busy): machine {:.2}, server {}, harness {harness_cores:.2} ({} processes), others {:.2}",
        cpu.machine,
        server_cores.map_or_else(|| "?".to_owned(), |c| format!("{c:.2}")),
        harness.len(),
        cpu.others()
    );
    let rss_end = rss_kib(args.server_pid)?;
    let (p50, p99, max) = (
        all.percentile_ms(50.0),
        all.percentile_ms(99.0),
        all.max_ms(),
    );
    let (put_p50, put_p99) = (puts.percentile_ms(50.0), puts.percentile_ms(99.0));
    let server_cpu_per_change = server_cpu_total / per_change.len().max(1) as f64;
    // Server CPU per client delivery: over every change, its CPU during the
    // change over the events delivered.
    let server_cpu_per_delivery = server_cpu_total * 1e3 / all.len().max(1) as f64;
    println!(
        "  PUT answered: p50 {put_p50:.2} ms, p99 {put_p99:.2} ms; server CPU per change {}",
        if args.server_pid.is_some() {
            format!(
                "{server_cpu_per_change:.2} ms ({server_cpu_per_delivery:.2} µs per client delivery)"
            )
        } else {
            "? (no --server-pid)".to_owned()
        }
    );
    let p99s: Vec<f64> = per_change
        .iter()
        .filter_map(|r| r.get("p99_ms").and_then(Value::as_f64))
        .collect();
    let worst_p99 = p99s.iter().copied().fold(0.0, f64::max);
    println!(
        "  over {} changes x clients: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (worst change's p99 {worst_p99:.2} ms)",
        per_change.len()
    );
    if let Some(r) = rss_end {
        println!(
            "  server VmRSS after the changes {:.1} MiB",
            r as f64 / 1024.0
        );
    }
    print_errors(&errors);
    if args.json {
        let summary = json!({
            "label": args.label,
            "clients": args.clients,
            "connected": connected,
            "failed": failed,
            "connect_s": connect_time.as_secs_f64(),
            "server_rss_before_kib": rss_before,
            "server_rss_connected_kib": rss_connected,
            "server_rss_end_kib": rss_end,
            "server_bytes_per_connection": server_per_conn,
            "harness_rss_kib": self_connected,
            "harness_processes": harness.len(),
            "second_request": args.second_request,
            "server_cpu_us_per_delivery": server_cpu_per_delivery,
            "harness_cores": harness_cores,
            "server_cores": server_cores,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
            "worst_change_p99_ms": worst_p99,
            "put_p50_ms": put_p50,
            "put_p99_ms": put_p99,
            "server_cpu_ms_per_change": server_cpu_per_change,
            "seed_flags": args.seed_flags,
            "others_cpu": cpu.others(),
            "changes": per_change,
        });
        println!("RESULT {summary}");
    }
    for h in handles {
        h.abort();
    }
    Ok(())
}

/// The resident memory of the harness's processes, summed (KiB).
fn harness_kib(harness: &[String]) -> Result<u64> {
    harness.iter().map(|p| status_kib(p, "VmRSS")).sum()
}

/// The CPU time of the harness's processes, summed (ns).
fn harness_nanos(harness: &[String]) -> Result<u64> {
    harness.iter().map(|p| cpu_nanos(p)).sum()
}

/// The `revision` of a write's answer.
fn revision_of(body: &[u8]) -> Result<u64> {
    let answer: Value = serde_json::from_slice(body).context("the PUT's answer is not JSON")?;
    answer
        .get("revision")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("the PUT's answer has no revision: {answer}"))
}

fn print_errors(errors: &HashMap<String, usize>) {
    let mut list: Vec<_> = errors.iter().collect();
    list.sort_by(|a, b| b.1.cmp(a.1));
    for (error, n) in list.iter().take(5) {
        println!("  {n} x error: {error}");
    }
}

/// How a client opens its stream.
#[derive(Clone, Copy)]
struct Opening<'a> {
    /// A request sent (and answered) first on the connection.
    first: Option<&'a [u8]>,
    request: &'a [u8],
    resume: bool,
}

/// One stream client: connect (holding a permit of the gate until the
/// snapshot is in, or the response's head when resuming, which has no
/// snapshot), then report every event's id until the stream ends.
async fn client(
    server: &Server,
    gate: &Semaphore,
    opening: Opening<'_>,
    tx: &mpsc::UnboundedSender<Report>,
    ready: &mut bool,
) -> Result<()> {
    let Opening {
        first,
        request,
        resume,
    } = opening;
    let permit = gate.acquire().await.context("connection gate closed")?;
    let mut conn = server.connect().await?;
    if let Some(first) = first {
        let head = conn.roundtrip(first).await?;
        if head.status != 200 || head.closes {
            bail!("the request before the stream answered {}", head.status);
        }
    }
    conn.send(request).await?;
    let head = conn.read_head().await?;
    if head.status != 200 {
        conn.read_body(head).await.ok();
        bail!(
            "the stream answered {}: {}",
            head.status,
            String::from_utf8_lossy(&conn.body)
        );
    }
    if head.framing != Framing::Chunked {
        bail!("the stream's body is not chunked ({:?})", head.framing);
    }
    let mut scanner = Scanner::default();
    let mut data = Vec::with_capacity(1024);
    let mut permit = Some(permit);
    if resume {
        permit = None;
        *ready = true;
        conn.shrink(1024);
        tx.send(Report::Ready { revision: 0 })
            .map_err(|_| anyhow!("coordinator gone"))?;
    }
    loop {
        data.clear();
        if !conn.read_chunk(&mut data).await? {
            bail!("the stream ended");
        }
        let at = Instant::now();
        for revision in scanner.feed(&data) {
            if permit.take().is_some() {
                *ready = true;
                conn.shrink(1024);
                tx.send(Report::Ready { revision })
                    .map_err(|_| anyhow!("coordinator gone"))?;
            } else {
                tx.send(Report::Got { revision, at })
                    .map_err(|_| anyhow!("coordinator gone"))?;
            }
        }
        if data.capacity() > 16 * 1024 {
            data = Vec::with_capacity(1024);
        }
    }
}

/// Splits an SSE byte stream into lines and yields the id of each complete
/// event that has one.
#[derive(Debug, Default)]
struct Scanner {
    /// An incomplete line carried over from the previous chunk.
    partial: Vec<u8>,
    id: Option<u64>,
}

impl Scanner {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u64> {
        let mut done = Vec::new();
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(i);
            rest = &tail[1..];
            let line: &[u8] = if self.partial.is_empty() {
                head
            } else {
                self.partial.extend_from_slice(head);
                &self.partial
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if let Some(id) = self.id.take() {
                    done.push(id);
                }
            } else if let Some(value) = line.strip_prefix(b"id:") {
                self.id = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
            }
            self.partial.clear();
        }
        self.partial.extend_from_slice(rest);
        if self.partial.capacity() > 64 * 1024 && self.partial.len() < 1024 {
            self.partial.shrink_to(1024);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_finds_complete_events_across_chunks() {
        let mut s = Scanner::default();
        assert_eq!(
            s.feed(b"event: snapshot\nid: 3\ndata: {\"a\":1}\n\n"),
            vec![3]
        );
        assert_eq!(s.feed(b": heartbeat\n\n"), Vec::<u64>::new());
        assert_eq!(s.feed(b"event: update\nid: 4"), Vec::<u64>::new());
        assert_eq!(s.feed(b"\ndata: x\n"), Vec::<u64>::new());
        assert_eq!(
            s.feed(b"\nevent: update\r\nid: 5\r\ndata: y\r\n\r\n"),
            vec![4, 5]
        );
    }
}
