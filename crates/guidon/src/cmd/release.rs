//! `guidon release start|status|pause|resume|skip|abort`: guarded rollouts
//! of a flag on a server (admin token).

use std::path::PathBuf;
use std::process::ExitCode;

use guidon_client::admin::Body;
use serde_json::Value;

use crate::input::Input;
use crate::output::{Table, answer, clean};
use crate::remote::{RemoteArgs, block_on, explain};

#[derive(clap::Args)]
pub(crate) struct ReleaseArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: ReleaseCommand,
}

#[derive(clap::Subcommand)]
enum ReleaseCommand {
    /// Start a guarded rollout from a plan file (steps, guards, alpha, tuning).
    Start {
        key: String,
        #[arg(long)]
        env: String,
        /// The plan (JSON, or YAML for .yaml/.yml; `-` for stdin).
        #[arg(long)]
        file: PathBuf,
    },
    /// Where the release is and every decision with its evidence.
    Status {
        key: String,
        #[arg(long)]
        env: String,
    },
    /// Stop at the current percentage.
    Pause {
        key: String,
        #[arg(long)]
        env: String,
    },
    /// Go on after a pause.
    Resume {
        key: String,
        #[arg(long)]
        env: String,
    },
    /// Go to the next step now.
    Skip {
        key: String,
        #[arg(long)]
        env: String,
    },
    /// Roll back to 0 %.
    Abort {
        key: String,
        #[arg(long)]
        env: String,
    },
}

/// Runs `guidon release …`.
pub(crate) fn run(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let as_json = args.remote.json;
    block_on(async move {
        let release = match args.command {
            ReleaseCommand::Start { key, env, file } => {
                let input = Input::read(&file)?;
                input.value()?;
                client
                    .start_release(&env, &key, Body::text(input.text, input.format))
                    .await
            }
            ReleaseCommand::Status { key, env } => client.release(&env, &key).await,
            ReleaseCommand::Pause { key, env } => client.release_action(&env, &key, "pause").await,
            ReleaseCommand::Resume { key, env } => {
                client.release_action(&env, &key, "resume").await
            }
            ReleaseCommand::Skip { key, env } => client.release_action(&env, &key, "skip").await,
            ReleaseCommand::Abort { key, env } => client.release_action(&env, &key, "abort").await,
        }
        .map_err(explain)?;
        answer(as_json, &release, render)
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => clean(s),
        Value::Null => "—".to_owned(),
        other => clean(&other.to_string()),
    }
}

/// The release as text: the flag and its status, the steps (the current
/// one marked), then the decisions with their evidence.
pub(crate) fn render(release: &Value) -> String {
    let mut out = format!(
        "release of {} in {}: {}\n",
        text(&release["flag"]),
        text(&release["env"]),
        text(&release["status"])
    );
    let empty = Vec::new();
    let current = release["state"]["step"].as_u64();
    let mut steps = Table::new(&["", "STEP", "PERCENT", "HOLD (S)", "MIN UNITS"]);
    for (i, s) in release["plan"]["steps"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        steps.row(vec![
            if current == Some(i as u64) {
                ">".to_owned()
            } else {
                String::new()
            },
            (i + 1).to_string(),
            text(&s["percentage"]),
            text(&s["hold_seconds"]),
            text(&s["min_units"]),
        ]);
    }
    out.push_str(&steps.render());
    for d in release["decisions"].as_array().unwrap_or(&empty) {
        let mut line = format!("{} {}", text(&d["at"]), text(&d["decision"]));
        if let Some(p) = d["percentage"].as_f64() {
            line.push_str(&format!(" to {p}%"));
        }
        if let Some(what) = d["what"].as_str() {
            line.push_str(&format!(": {}", clean(what)));
        }
        for e in d["evidence"].as_array().unwrap_or(&empty) {
            line.push_str(&format!(
                "; {} {:.4} vs {:.4}, difference {:+.4} in [{:+.4}, {:+.4}]",
                text(&e["metric"]),
                e["treatment_mean"].as_f64().unwrap_or(f64::NAN),
                e["control_mean"].as_f64().unwrap_or(f64::NAN),
                e["difference"].as_f64().unwrap_or(f64::NAN),
                e["interval"]["lower"].as_f64().unwrap_or(f64::NAN),
                e["interval"]["upper"].as_f64().unwrap_or(f64::NAN),
            ));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("test: {}\n", text(&release["test"])));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_release_as_text() {
        let out = render(&json!({
            "flag": "new_search", "env": "production", "status": "rolled_back",
            "plan": {"steps": [{"percentage": 10, "hold_seconds": 60, "min_units": 50},
                               {"percentage": 100, "hold_seconds": 60}]},
            "state": {"step": 0},
            "decisions": [{"at": "2026-12-04T19:00:00Z", "decision": "breach",
                "evidence": [{"metric": "errors", "treatment_mean": 0.48, "control_mean": 0.03,
                              "difference": 0.45, "interval": {"lower": 0.29, "upper": 0.62}}]}],
            "test": "always-valid confidence sequence"
        }));
        assert!(
            out.starts_with("release of new_search in production: rolled_back"),
            "{out}"
        );
        assert!(out.contains(">  1"), "{out}");
        assert!(
            out.contains(
                "breach; errors 0.4800 vs 0.0300, difference +0.4500 in [+0.2900, +0.6200]"
            ),
            "{out}"
        );
    }
}
