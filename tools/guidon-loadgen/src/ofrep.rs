//! `guidon-loadgen ofrep`: single-flag OFREP evaluations over keep-alive
//! connections, each with its own context.
//!
//! Closed loop by default: every connection sends its next request as soon
//! as the previous answer is read, so the figure is the throughput at that
//! concurrency and the latency each request saw. With `--rate` it is an
//! open loop: each connection sends on a fixed schedule, and a request's
//! latency is also counted from when it *should* have been sent, so a slow
//! answer that delays the next request is not hidden (coordinated omission).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::http::{Conn, Server};
use crate::stats::{CpuSample, CpuUse, Samples};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    server: String,
    /// An sdk token (its environment is implied), or an admin token with --env.
    #[arg(long, env = "GUIDON_LOADGEN_TOKEN", hide_env_values = true)]
    token: String,
    /// Sent as X-Guidon-Environment (needed with an admin token).
    #[arg(long)]
    env: Option<String>,
    /// The flag evaluated by every request.
    #[arg(long, default_value = "new_checkout")]
    flag: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// How many distinct users the contexts are drawn from, uniformly at
    /// random; 0: every request is a user never seen before.
    #[arg(long, default_value_t = 0)]
    users: u64,
    /// Total requests per second, on a fixed schedule (open loop); without
    /// it each connection sends as fast as it is answered (closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Runtime worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seed of the user choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The server's process id: its CPU use during the measurement is
    /// reported beside the load generator's and the rest of the machine's.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A name for this run, repeated in the output.
    #[arg(long, default_value = "ofrep")]
    label: String,
    /// Also print the summary as one JSON line (prefixed `RESULT `).
    #[arg(long)]
    json: bool,
    /// The evaluation API asked: Guidon's OFREP, or (to measure a peer with
    /// the same generator) Unleash's frontend API, `GET
    /// /api/frontend/features/FLAG?userId=…&…` with `Authorization: TOKEN`,
    /// the same context as query parameters. Unleash answers 404 when the
    /// flag is not enabled for the context; that is an answer, counted.
    #[arg(long, value_enum, default_value_t = Api::Ofrep)]
    api: Api,
}

/// An evaluation API (`--api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Api {
    /// `POST /ofrep/v1/evaluate/flags/FLAG` with `{"context": {…}}`.
    Ofrep,
    /// `GET /api/frontend/features/FLAG?userId=…&…` (Unleash, Unleash Edge).
    UnleashFrontend,
}

/// Every how many responses one is parsed to tally variants and reasons.
const SAMPLE_EVERY: u64 = 16;

/// What one connection measured.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    /// Non-200 answers, bodies with an error code, and broken connections.
    errors: u64,
    first_error: Option<String>,
    /// Latency from when the request was sent.
    latency: Samples,
    /// Latency from when it was scheduled (open loop only).
    scheduled: Samples,
    variants: HashMap<String, u64>,
    reasons: HashMap<String, u64>,
}

impl Tally {
    fn error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.extend(other.latency);
        self.scheduled.extend(other.scheduled);
        for (k, v) in other.variants {
            *self.variants.entry(k).or_default() += v;
        }
        for (k, v) in other.reasons {
            *self.reasons.entry(k).or_default() += v;
        }
    }
}

/// SplitMix64: a fast, well-mixed sequence; enough to pick users.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const COUNTRIES: [&str; 8] = ["US", "CA", "FR", "DE", "GB", "JP", "BR", "IN"];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
const PLANS: [&str; 3] = ["free", "pro", "enterprise"];

/// The context of one user: attributes that are a function of the user,
/// so a user's requests are identical (what an evaluation cache can hit)
/// and users differ the way real ones do: about one in twenty has a staff
/// address, a third are on mobile.
struct Context {
    user: u64,
    domain: &'static str,
    country: &'static str,
    device: &'static str,
    plan: &'static str,
    minor: u64,
    patch: u64,
}

impl Context {
    fn of(user: u64) -> Context {
        let h = mix(user);
        let pick = |shift: u32, n: usize| (h >> shift) as usize % n;
        Context {
            user,
            domain: if (h >> 24).is_multiple_of(20) {
                "acme.com"
            } else {
                "example.com"
            },
            country: COUNTRIES[pick(0, COUNTRIES.len())],
            device: DEVICES[pick(8, DEVICES.len())],
            plan: PLANS[pick(16, PLANS.len())],
            minor: (h >> 32) % 6,
            patch: (h >> 40) % 10,
        }
    }
}

/// The OFREP request body for one user: `{"context": {…}}`.
pub(crate) fn write_body(out: &mut String, user: u64) {
    let c = Context::of(user);
    out.clear();
    let _ = write!(
        out,
        r#"{{"context":{{"targetingKey":"user-{}","email":"user-{}@{}","country":"{}","device":"{}","plan":"{}","app_version":"2.{}.{}"}}}}"#,
        c.user, c.user, c.domain, c.country, c.device, c.plan, c.minor, c.patch,
    );
}

/// The same context as Unleash's query parameters (`userId` is its
/// targeting key; the others are properties).
fn write_query(out: &mut String, user: u64) {
    let c = Context::of(user);
    out.clear();
    let _ = write!(
        out,
        "userId=user-{}&email=user-{}%40{}&country={}&device={}&plan={}&app_version=2.{}.{}",
        c.user, c.user, c.domain, c.country, c.device, c.plan, c.minor, c.patch,
    );
}

/// One request of `api` for `user`, into `request`.
fn write_request(plan: &Plan, request: &mut Vec<u8>, scratch: &mut String, user: u64) {
    request.clear();
    match plan.api {
        Api::Ofrep => {
            write_body(scratch, user);
            request.extend_from_slice(plan.prefix.as_bytes());
            let _ = write!(LenWriter(request), "{}\r\n\r\n", scratch.len());
            request.extend_from_slice(scratch.as_bytes());
        }
        Api::UnleashFrontend => {
            write_query(scratch, user);
            request.extend_from_slice(plan.prefix.as_bytes());
            request.extend_from_slice(scratch.as_bytes());
            request.extend_from_slice(plan.suffix.as_bytes());
        }
    }
}

/// Whether an answer of this status is an evaluation.
fn answered(api: Api, status: u16) -> bool {
    status == 200 || (api == Api::UnleashFrontend && status == 404)
}

struct Plan {
    server: Server,
    api: Api,
    /// What comes before the body (OFREP: the body's length) or the query.
    prefix: String,
    /// What comes after the query (Unleash).
    suffix: String,
    flag: String,
    users: u64,
    seed: u64,
    /// Per connection, on the open loop.
    interval: Option<Duration>,
    measure_from: Instant,
    until: Instant,
}

pub(crate) fn run(args: Args) -> Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    if !(args.warmup >= 0.0 && args.warmup.is_finite()) {
        bail!("--warmup must be zero or a positive number of seconds");
    }
    let interval = match args.rate {
        None => None,
        Some(r) if r > 0.0 && r.is_finite() => {
            Some(Duration::from_secs_f64(args.connections as f64 / r))
        }
        Some(r) => bail!("--rate must be a positive number of requests per second, got {r}"),
    };
    let server = Server::parse(&args.server)?;
    let runtime = crate::runtime(args.threads)?;
    runtime.block_on(async move {
        let (prefix, suffix) = match args.api {
            Api::Ofrep => {
                let mut headers = format!("Authorization: Bearer {}\r\n", args.token);
                if let Some(env) = &args.env {
                    let _ = write!(headers, "X-Guidon-Environment: {env}\r\n");
                }
                let prefix = format!(
                    "POST /ofrep/v1/evaluate/flags/{} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Type: application/json\r\nContent-Length: ",
                    args.flag, server.host
                );
                (prefix, String::new())
            }
            Api::UnleashFrontend => (
                format!("GET /api/frontend/features/{}?", args.flag),
                format!(
                    " HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
                    server.host, args.token
                ),
            ),
        };
        let plan = Plan {
            server,
            api: args.api,
            prefix,
            suffix,
            flag: args.flag.clone(),
            users: args.users,
            seed: args.seed,
            interval,
            measure_from: Instant::now(),
            until: Instant::now(),
        };
        // Requests first, until one is enabled: a wrong token or flag is
        // one clear error, not a run of failures.
        let mut conn = plan.server.connect().await?;
        let (mut request, mut scratch) = (Vec::new(), String::new());
        let mut enabled = false;
        for user in 0..64 {
            write_request(&plan, &mut request, &mut scratch, user);
            let head = conn.roundtrip(&request).await?;
            if !answered(plan.api, head.status) {
                bail!(
                    "the first evaluations answered {}: {}",
                    head.status,
                    String::from_utf8_lossy(&conn.body)
                );
            }
            if head.status == 200 {
                enabled = true;
                break;
            }
        }
        if !enabled {
            bail!("64 evaluations in a row answered 404: is {:?} the flag's name?", args.flag);
        }
        drop(conn);

        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(args.warmup);
        let plan = Arc::new(Plan {
            measure_from,
            until: measure_from + Duration::from_secs_f64(args.duration),
            ..plan
        });
        let pids: Vec<String> = std::iter::once("self".to_owned())
            .chain(args.server_pid.map(|p| p.to_string()))
            .collect();
        let (from, until) = (plan.measure_from, plan.until);
        let sampler = tokio::spawn(async move {
            tokio::time::sleep_until(from).await;
            let a = CpuSample::take(&pids)?;
            let started = Instant::now();
            tokio::time::sleep_until(until).await;
            let b = CpuSample::take(&pids)?;
            Ok::<_, anyhow::Error>(a.until(&b, started.elapsed().as_secs_f64()))
        });
        let mut tasks = Vec::with_capacity(args.connections);
        for i in 0..args.connections {
            let plan = plan.clone();
            tasks.push(tokio::spawn(connection(plan, i as u64, args.connections)));
        }
        let mut total = Tally::default();
        for task in tasks {
            total.merge(task.await.map_err(|e| anyhow!("a connection task failed: {e}"))?);
        }
        let cpu = sampler
            .await
            .map_err(|e| anyhow!("the CPU sampler failed: {e}"))??;
        report(&args, &mut total, &cpu);
        Ok(())
    })
}

async fn connection(plan: Arc<Plan>, index: u64, connections: usize) -> Tally {
    let expected = (plan.until - plan.measure_from).as_secs_f64() * 50_000.0 / connections as f64;
    let mut tally = Tally {
        latency: Samples::with_capacity(expected as usize),
        ..Tally::default()
    };
    let mut rng = mix(plan.seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut seq: u64 = 0;
    let mut body = String::with_capacity(256);
    let mut request = Vec::with_capacity(512);
    let mut conn: Option<Conn> = None;
    let mut responses: u64 = 0;
    // Spread the open loop's connections over one interval.
    let mut next_send = plan
        .interval
        .map(|i| Instant::now() + i.mul_f64(index as f64 / connections as f64));
    loop {
        if let (Some(at), Some(interval)) = (next_send, plan.interval) {
            if at >= plan.until {
                break;
            }
            tokio::time::sleep_until(at).await;
            next_send = Some(at + interval);
        } else if Instant::now() >= plan.until {
            break;
        }
        let scheduled = next_send.map(|n| n - plan.interval.unwrap_or_default());
        let user = if plan.users == 0 {
            seq += 1;
            // Unique across connections and runs with different seeds.
            (plan.seed << 56) ^ (index << 40) ^ seq
        } else {
            rng = mix(rng);
            rng % plan.users
        };
        write_request(&plan, &mut request, &mut body, user);

        let c = match conn.as_mut() {
            Some(c) => c,
            None => match plan.server.connect().await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tally.error(|| format!("{e:#}"));
                    if tally.errors > 1000 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let result = c.roundtrip(&request).await;
        let done = Instant::now();
        let counted = done >= plan.measure_from && done <= plan.until;
        match result {
            Ok(head) if answered(plan.api, head.status) => {
                responses += 1;
                if responses % SAMPLE_EVERY == 1
                    && let Err(e) = sample(&mut tally, plan.api, head.status, &c.body, &plan.flag)
                {
                    tally.error(|| format!("{e:#}"));
                }
                if counted {
                    tally.ok += 1;
                    tally.latency.push(done - sent);
                    if let Some(s) = scheduled {
                        tally.scheduled.push(done - s);
                    }
                }
                if head.closes {
                    conn = None;
                }
            }
            Ok(head) => {
                let status = head.status;
                let text = String::from_utf8_lossy(&c.body).into_owned();
                tally.error(|| format!("status {status}: {text}"));
                if head.closes {
                    conn = None;
                }
            }
            Err(e) => {
                tally.error(|| format!("{e:#}"));
                conn = None;
            }
        }
        if tally.errors > 1000 {
            break;
        }
    }
    tally
}

/// `write!` into a byte vector.
struct LenWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for LenWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Checks one answer and tallies its variant and reason.
fn sample(tally: &mut Tally, api: Api, status: u16, body: &[u8], flag: &str) -> Result<()> {
    if api == Api::UnleashFrontend {
        return sample_unleash(tally, status, body, flag);
    }
    let value: Value = serde_json::from_slice(body).context("an answer is not JSON")?;
    if value.get("key").and_then(Value::as_str) != Some(flag) {
        bail!("an answer is not for {flag:?}: {value}");
    }
    if let Some(code) = value.get("errorCode") {
        bail!("an answer has errorCode {code}");
    }
    let variant = value
        .get("variant")
        .and_then(Value::as_str)
        .unwrap_or("(none)")
        .to_owned();
    let reason = value
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("(none)")
        .to_owned();
    *tally.variants.entry(variant).or_default() += 1;
    *tally.reasons.entry(reason).or_default() += 1;
    Ok(())
}

/// Unleash's frontend answer: `{"name", "enabled": true, "variant": {"name", …}}`,
/// or 404 for a flag not enabled for the context.
fn sample_unleash(tally: &mut Tally, status: u16, body: &[u8], flag: &str) -> Result<()> {
    let (variant, reason) = if status == 404 {
        ("(not enabled)".to_owned(), "404".to_owned())
    } else {
        let value: Value = serde_json::from_slice(body).context("an answer is not JSON")?;
        if value.get("name").and_then(Value::as_str) != Some(flag) {
            bail!("an answer is not for {flag:?}: {value}");
        }
        let variant = value
            .pointer("/variant/name")
            .and_then(Value::as_str)
            .unwrap_or("(none)")
            .to_owned();
        (variant, "200".to_owned())
    };
    *tally.variants.entry(variant).or_default() += 1;
    *tally.reasons.entry(reason).or_default() += 1;
    Ok(())
}

fn shares(counts: &HashMap<String, u64>) -> String {
    let total: u64 = counts.values().sum();
    let mut pairs: Vec<_> = counts.iter().collect();
    pairs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {:.1}%", **v as f64 * 100.0 / total.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(args: &Args, t: &mut Tally, cpu: &CpuUse) {
    let rps = t.ok as f64 / args.duration;
    let (p50, p90, p99, p999, max, mean) = (
        t.latency.percentile_ms(50.0),
        t.latency.percentile_ms(90.0),
        t.latency.percentile_ms(99.0),
        t.latency.percentile_ms(99.9),
        t.latency.max_ms(),
        t.latency.mean_ms(),
    );
    let users = if args.users == 0 {
        "all distinct".to_owned()
    } else {
        args.users.to_string()
    };
    println!(
        "{}: {} connections, {} s measured after {} s warm-up, users {users}, {}",
        args.label,
        args.connections,
        args.duration,
        args.warmup,
        args.rate.map_or_else(
            || "closed loop".to_owned(),
            |r| format!("open loop at {r} req/s")
        ),
    );
    println!(
        "  {} requests, {rps:.0} req/s, {} errors{}",
        t.ok,
        t.errors,
        t.first_error
            .as_deref()
            .map_or_else(String::new, |e| format!(" (first: {e})"))
    );
    println!(
        "  latency from send: mean {mean:.3} ms, p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms"
    );
    let mut scheduled = json!(null);
    if t.scheduled.len() > 0 {
        let (s50, s99, smax) = (
            t.scheduled.percentile_ms(50.0),
            t.scheduled.percentile_ms(99.0),
            t.scheduled.max_ms(),
        );
        println!("  latency from schedule: p50 {s50:.3} ms, p99 {s99:.3} ms, max {smax:.3} ms");
        scheduled = json!({"p50_ms": s50, "p99_ms": s99, "max_ms": smax});
    }
    let loadgen_cpu = cpu.processes.first().copied().flatten();
    let server_cpu = cpu.processes.get(1).copied().flatten();
    let cores = |c: Option<f64>| c.map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"));
    // CPU time per answered request: steadier than req/s on a shared machine.
    let per_request = |c: Option<f64>| c.filter(|_| rps > 0.0).map(|c| c * 1e6 / rps);
    let micros = |c: Option<f64>| c.map_or_else(|| "?".to_owned(), |c| format!("{c:.1} µs"));
    println!(
        "  CPU (cores busy): machine {:.2}, server {}, load generator {}, others {:.2}, steal {:.2}; per request: server {}, load generator {}",
        cpu.machine,
        cores(server_cpu),
        cores(loadgen_cpu),
        cpu.others(),
        cpu.steal,
        micros(per_request(server_cpu)),
        micros(per_request(loadgen_cpu)),
    );
    println!("  variants: {}", shares(&t.variants));
    println!("  reasons: {}", shares(&t.reasons));
    if args.json {
        let summary = json!({
            "label": args.label,
            "api": format!("{:?}", args.api),
            "connections": args.connections,
            "users": args.users,
            "rate": args.rate,
            "duration_s": args.duration,
            "requests": t.ok,
            "errors": t.errors,
            "rps": rps,
            "mean_ms": mean,
            "p50_ms": p50,
            "p90_ms": p90,
            "p99_ms": p99,
            "p999_ms": p999,
            "max_ms": max,
            "scheduled": scheduled,
            "cpu": {
                "machine": cpu.machine,
                "server": server_cpu,
                "loadgen": loadgen_cpu,
                "others": cpu.others(),
                "steal": cpu.steal,
                "server_us_per_request": per_request(server_cpu),
                "loadgen_us_per_request": per_request(loadgen_cpu),
            },
        });
        println!("RESULT {summary}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_and_a_function_of_the_user() -> Result<()> {
        let mut a = String::new();
        let mut b = String::new();
        write_body(&mut a, 42);
        write_body(&mut b, 42);
        assert_eq!(a, b);
        let v: Value = serde_json::from_str(&a)?;
        assert_eq!(v["context"]["targetingKey"], "user-42");
        write_body(&mut b, 43);
        assert_ne!(a, b);
        Ok(())
    }

    #[test]
    fn the_query_carries_the_same_context() -> Result<()> {
        let (mut body, mut query) = (String::new(), String::new());
        write_body(&mut body, 42);
        write_query(&mut query, 42);
        let v: Value = serde_json::from_str(&body)?;
        let context = v["context"].as_object().context("a context")?;
        for (key, value) in context {
            let key = if key == "targetingKey" { "userId" } else { key };
            let value = value.as_str().context("a string")?.replace('@', "%40");
            assert!(
                query.contains(&format!("{key}={value}")),
                "{key}={value} in {query}"
            );
        }
        assert_eq!(query.matches('=').count(), context.len());
        Ok(())
    }

    #[test]
    fn some_users_are_staff() {
        let mut body = String::new();
        let staff = (0..10_000)
            .filter(|&u| {
                write_body(&mut body, u);
                body.contains("@acme.com")
            })
            .count();
        assert!((300..700).contains(&staff), "{staff}");
    }
}
