//! `guidon metrics list|get|set|delete`: an environment's metric catalogue
//! on a server (admin token). `set` takes a file holding one metric, or
//! the definition as options (`--kind binomial --event purchase`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use guidon_client::admin::Body;
use serde_json::{Map, Value, json};

use crate::input::Input;
use crate::output::{Table, answer, clean, count};
use crate::remote::{RemoteArgs, block_on, explain};

#[derive(clap::Args)]
pub(crate) struct MetricsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: MetricsCommand,
}

// Parsed once per run: the size of `Set` costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand)]
enum MetricsCommand {
    /// The catalogue: key, kind, what it reads, direction, guardrail.
    List {
        #[arg(long)]
        env: String,
    },
    /// One metric as JSON.
    Get {
        key: String,
        #[arg(long)]
        env: String,
    },
    /// Create or replace a metric, from a file or from options.
    Set {
        key: String,
        #[arg(long)]
        env: String,
        /// A file holding one metric (JSON, or YAML for .yaml/.yml; `-` for stdin).
        #[arg(long, conflicts_with_all = ["kind", "event", "numerator", "denominator", "cap", "cap_percentile", "direction", "guardrail", "description"])]
        file: Option<PathBuf>,
        /// binomial (converted or not), sum (of values per unit) or ratio (of two metrics).
        #[arg(long, value_parser = ["binomial", "sum", "ratio"])]
        kind: Option<String>,
        /// binomial and sum: the conversions' metric name in events.
        #[arg(long)]
        event: Option<String>,
        /// ratio: the metric on top.
        #[arg(long)]
        numerator: Option<String>,
        /// ratio: the metric below.
        #[arg(long)]
        denominator: Option<String>,
        /// sum: cap each unit's value at this.
        #[arg(long, conflicts_with = "cap_percentile")]
        cap: Option<f64>,
        /// sum: cap each unit's value at this percentile (0–100, exclusive).
        #[arg(long)]
        cap_percentile: Option<f64>,
        /// higher or lower is better.
        #[arg(long, value_parser = ["higher", "lower"])]
        direction: Option<String>,
        /// Mark it as a guardrail (a metric that must not get worse).
        #[arg(long)]
        guardrail: bool,
        #[arg(long)]
        description: Option<String>,
        /// Only if the metric is still at this version (0: only if new).
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
    },
    /// Delete a metric that no experiment or ratio uses.
    Delete {
        key: String,
        #[arg(long)]
        env: String,
    },
}

/// Runs `guidon metrics …`.
pub(crate) fn run(args: MetricsArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let as_json = args.remote.json;
    block_on(async move {
        match args.command {
            MetricsCommand::List { env } => {
                let metrics = client.metrics(&env).await.map_err(explain)?;
                answer(as_json, &metrics, render_list)
            }
            MetricsCommand::Get { key, env } => {
                let metric = client.metric(&env, &key).await.map_err(explain)?;
                answer(true, &metric, |_| String::new())
            }
            MetricsCommand::Set {
                key,
                env,
                file,
                kind,
                event,
                numerator,
                denominator,
                cap,
                cap_percentile,
                direction,
                guardrail,
                description,
                if_version,
            } => {
                let body = match file {
                    Some(path) => {
                        let input = Input::read(&path)?;
                        input.value()?;
                        Body::text(input.text, input.format)
                    }
                    None => {
                        let Some(kind) = kind else {
                            bail!(
                                "give --file FILE, or the metric as options: --kind binomial|sum|ratio …"
                            );
                        };
                        let mut m = Map::new();
                        m.insert("kind".into(), json!(kind));
                        for (name, value) in [
                            ("event", event),
                            ("numerator", numerator),
                            ("denominator", denominator),
                            ("direction", direction),
                            ("description", description),
                        ] {
                            if let Some(v) = value {
                                m.insert(name.into(), json!(v));
                            }
                        }
                        match (cap, cap_percentile) {
                            (Some(v), _) => {
                                m.insert("cap".into(), json!({"value": v}));
                            }
                            (None, Some(p)) => {
                                m.insert("cap".into(), json!({"percentile": p}));
                            }
                            (None, None) => {}
                        }
                        if guardrail {
                            m.insert("guardrail".into(), json!(true));
                        }
                        Body::json(&Value::Object(m)).map_err(explain)?
                    }
                };
                let stored = client
                    .set_metric(&env, &key, body, if_version)
                    .await
                    .map_err(explain)?;
                answer(as_json, &stored, |s| {
                    format!(
                        "metric {} in {env}: version {}\n",
                        clean(&key),
                        s["version"].as_u64().unwrap_or(0)
                    )
                })
            }
            MetricsCommand::Delete { key, env } => {
                client.delete_metric(&env, &key).await.map_err(explain)?;
                answer(as_json, &json!({"deleted": key}), |_| {
                    format!("deleted metric {} from {env}\n", clean(&key))
                })
            }
        }
    })
}

/// What a metric reads, in words: `purchase`, `purchase (capped at 500)`,
/// `revenue / orders`.
fn reads(m: &Value) -> String {
    let text = |v: &Value| v.as_str().map_or_else(|| "—".to_owned(), clean);
    match m["kind"].as_str() {
        Some("ratio") => format!("{} / {}", text(&m["numerator"]), text(&m["denominator"])),
        _ => {
            let cap = &m["cap"];
            match (cap["value"].as_f64(), cap["percentile"].as_f64()) {
                (Some(v), _) => format!("{} (capped at {v})", text(&m["event"])),
                (None, Some(p)) => format!("{} (capped at p{p})", text(&m["event"])),
                _ => text(&m["event"]),
            }
        }
    }
}

fn render_list(answer: &Value) -> String {
    let empty = Vec::new();
    let metrics = answer["metrics"].as_array().unwrap_or(&empty);
    let mut table = Table::new(&["METRIC", "KIND", "READS", "BETTER", "GUARDRAIL", "VERSION"]);
    for m in metrics {
        table.row(vec![
            m["key"].as_str().map_or_else(|| "—".to_owned(), clean),
            m["kind"].as_str().unwrap_or("—").to_owned(),
            reads(m),
            m["direction"].as_str().unwrap_or("higher").to_owned(),
            if m["guardrail"].as_bool().unwrap_or(false) {
                "yes".to_owned()
            } else {
                String::new()
            },
            m["version"]
                .as_u64()
                .map_or_else(|| "—".to_owned(), |v| v.to_string()),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("{}\n", count(metrics.len(), "metric", "metrics")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_as_a_table() {
        let out = render_list(&json!({"metrics": [
            {"key": "buy", "kind": "binomial", "event": "purchase", "version": 1},
            {"key": "revenue", "kind": "sum", "event": "purchase", "cap": {"percentile": 99.0}, "version": 2},
            {"key": "rpb", "kind": "ratio", "numerator": "revenue", "denominator": "buy", "version": 1},
            {"key": "refunds", "kind": "sum", "event": "refund", "direction": "lower", "guardrail": true, "version": 1}
        ]}));
        assert!(out.contains("purchase (capped at p99)"), "{out}");
        assert!(out.contains("revenue / buy"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("refunds") && l.contains("lower") && l.contains("yes")),
            "{out}"
        );
        assert!(out.ends_with("4 metrics\n"), "{out}");
        assert!(render_list(&json!({"metrics": [{"key": "a"}]})).ends_with("1 metric\n"));
    }
}
