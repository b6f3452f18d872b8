//! `guidon eval`: one flag of a flag file for one or many contexts, one
//! JSON result per line.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use guidon_engine::{Context, Evaluation, Explanation, Snapshot, Timestamp};

use super::validate::load_snapshot;
use crate::remote::{RemoteArgs, block_on, explain};

#[derive(clap::Args)]
pub(crate) struct EvalArgs {
    /// The flag file (JSON, or YAML when it ends in .yaml/.yml; `-` reads JSON from stdin).
    #[arg(long, short, required_unless_present = "env", conflicts_with = "env")]
    file: Option<PathBuf>,
    /// Evaluate on a server (--server, --token) in this environment, not from a file.
    #[arg(long)]
    env: Option<String>,
    /// With --env: as the environment was at this instant (RFC 3339), evaluated
    /// at that instant; the answer is explained and names the revision, who made it and when.
    #[arg(long, requires = "env", conflicts_with = "revision")]
    at: Option<String>,
    /// With --env: as the environment was just after this revision, evaluated
    /// at the time it was made.
    #[arg(long, requires = "env")]
    revision: Option<u64>,
    #[command(flatten)]
    remote: RemoteArgs,
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
    /// The evaluation time (RFC 3339); defaults to now. With --env, use --at.
    #[arg(long, conflicts_with = "env")]
    now: Option<String>,
}

pub(crate) fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let EvalArgs {
        file,
        env,
        at,
        revision,
        remote,
        flag,
        context,
        contexts,
        explain,
        now,
    } = args;
    let file = match (file, env) {
        (_, Some(env)) => {
            let source = match (context, contexts) {
                (Some(text), _) => Contexts::One(text),
                (None, Some(path)) => Contexts::Lines(path),
                (None, None) => bail!("give --context JSON or --contexts FILE.jsonl"),
            };
            let at = at
                .map(|text| {
                    text.parse::<Timestamp>()
                        .map(|t| t.to_string())
                        .map_err(|e| anyhow!("--at {text:?} is not an RFC 3339 timestamp: {e}"))
                })
                .transpose()?;
            let remote = Remote {
                remote,
                env,
                flag,
                explain,
                at,
                revision,
            };
            return remote.run(source);
        }
        (Some(file), None) => file,
        (None, None) => bail!("give --file FLAGS, or --env ENV to evaluate on a server"),
    };
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
                let Some(ctx) = Context::from_json_line(&line)
                    .with_context(|| format!("{} line {}", path.display(), n + 1))?
                else {
                    continue;
                };
                eval.print(&ctx, &mut out)?;
            }
        }
        (None, None) => bail!("give --context JSON or --contexts FILE.jsonl"),
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
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

fn describe_keys(snapshot: &Snapshot) -> String {
    const SHOWN: usize = 10;
    let keys: Vec<&str> = snapshot.flag_keys().take(SHOWN).collect();
    match snapshot.len() {
        0 => "no flags".to_owned(),
        n if n > SHOWN => format!("{} and {} more", keys.join(", "), n - SHOWN),
        _ => keys.join(", "),
    }
}

fn open_lines(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Box::new(std::io::BufReader::new(file)))
}

/// Where the contexts come from.
enum Contexts {
    One(String),
    Lines(PathBuf),
}

/// `guidon eval --env`: each context evaluated by the server (and, with
/// --at or --revision, as the environment was then).
struct Remote {
    remote: RemoteArgs,
    env: String,
    flag: String,
    explain: bool,
    at: Option<String>,
    revision: Option<u64>,
}

impl Remote {
    fn run(self, source: Contexts) -> anyhow::Result<ExitCode> {
        // Each context is checked here first, with the file's line, as the
        // file mode reads it.
        let mut contexts = Vec::new();
        match source {
            Contexts::One(text) => {
                Context::from_json_str(&text).context("--context")?;
                contexts.push(text);
            }
            Contexts::Lines(path) => {
                for (n, line) in open_lines(&path)?.lines().enumerate() {
                    let line = line.with_context(|| format!("reading {}", path.display()))?;
                    if Context::from_json_line(&line)
                        .with_context(|| format!("{} line {}", path.display(), n + 1))?
                        .is_some()
                    {
                        contexts.push(line);
                    }
                }
            }
        }
        let client = self.remote.client()?;
        block_on(async move {
            let mut out = std::io::stdout().lock();
            for text in contexts {
                let context: serde_json::Value = serde_json::from_str(&text)?;
                let mut request = serde_json::json!({
                    "flag": self.flag,
                    "context": context,
                    "explain": self.explain,
                });
                if let Some(at) = &self.at {
                    request["at"] = at.clone().into();
                }
                if let Some(revision) = self.revision {
                    request["revision"] = revision.into();
                }
                let answer = client
                    .evaluate(&self.env, &request)
                    .await
                    .map_err(explain)?;
                writeln!(out, "{}", serde_json::to_string(&answer)?)?;
            }
            out.flush()?;
            Ok(())
        })
    }
}
