//! `guidon eval`: one flag of a flag file for one or many contexts, one
//! JSON result per line.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use guidon_engine::{Context, Evaluation, Explanation, Snapshot, Timestamp};

use super::validate::load_snapshot;

#[derive(clap::Args)]
pub(crate) struct EvalArgs {
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
}

pub(crate) fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let EvalArgs {
        file,
        flag,
        context,
        contexts,
        explain,
        now,
    } = args;
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
