//! `guidon schedule add|list|cancel`: changes to a flag applied later, at
//! a time in a time zone, by the server (admin token).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::{Map, Value, json};

use crate::input::Input;
use crate::output::{Table, answer, clean, count};
use crate::remote::{RemoteArgs, block_on, explain};

#[derive(clap::Args)]
pub(crate) struct ScheduleArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(clap::Subcommand)]
enum ScheduleCommand {
    /// Schedule a change to a flag: --enable, --disable, --rollout N, a
    /// merge patch (--patch FILE), a new definition (--file FILE) or --delete.
    Add {
        /// The flag.
        key: String,
        #[arg(long)]
        env: String,
        /// When: RFC 3339 (2026-12-24T17:00:00Z) or a local time (2026-12-24T18:00) with --time-zone.
        #[arg(long)]
        at: String,
        /// An IANA time zone, e.g. Europe/Paris.
        #[arg(long)]
        time_zone: Option<String>,
        #[arg(long, group = "change")]
        enable: bool,
        #[arg(long, group = "change")]
        disable: bool,
        /// Set the rollout percentage (0–100).
        #[arg(long, group = "change", value_name = "PERCENT")]
        rollout: Option<f64>,
        /// A JSON merge patch, applied to the flag as it is when due.
        #[arg(long, group = "change", value_name = "FILE")]
        patch: Option<PathBuf>,
        /// A whole new definition, applied only if the flag has not changed meanwhile.
        #[arg(long, group = "change", value_name = "FILE")]
        file: Option<PathBuf>,
        /// Delete the flag (only if it has not changed meanwhile).
        #[arg(long, group = "change")]
        delete: bool,
    },
    /// The environment's scheduled changes, newest first.
    List {
        #[arg(long)]
        env: String,
    },
    /// Cancel a pending scheduled change.
    Cancel {
        id: u64,
        #[arg(long)]
        env: String,
    },
}

/// Runs `guidon schedule …`.
pub(crate) fn run(args: ScheduleArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let as_json = args.remote.json;
    block_on(async move {
        match args.command {
            ScheduleCommand::Add {
                key,
                env,
                at,
                time_zone,
                enable,
                disable,
                rollout,
                patch,
                file,
                delete,
            } => {
                let mut request = Map::new();
                request.insert("at".into(), json!(at));
                if let Some(tz) = time_zone {
                    request.insert("time_zone".into(), json!(tz));
                }
                if enable || disable {
                    request.insert("patch".into(), json!({"enabled": enable}));
                } else if let Some(p) = rollout {
                    request.insert("patch".into(), json!({"rollout": {"percentage": p}}));
                } else if let Some(path) = patch {
                    request.insert("patch".into(), Input::read(&path)?.value()?);
                } else if let Some(path) = file {
                    request.insert("flag".into(), Input::read(&path)?.value()?);
                } else if delete {
                    request.insert("delete".into(), json!(true));
                } else {
                    bail!(
                        "say what to change: --enable, --disable, --rollout N, --patch FILE, --file FILE or --delete"
                    );
                }
                let planned = client
                    .schedule_change(&env, &key, &Value::Object(request))
                    .await
                    .map_err(explain)?;
                answer(as_json, &planned, |p| {
                    format!(
                        "scheduled #{} for {} ({}): {}\n",
                        p["id"],
                        text(&p["due_at"]),
                        text(&p["time_zone"]),
                        clean(&key)
                    )
                })
            }
            ScheduleCommand::List { env } => {
                let list = client.schedules(&env).await.map_err(explain)?;
                answer(as_json, &list, render_list)
            }
            ScheduleCommand::Cancel { id, env } => {
                let cancelled = client.cancel_schedule(&env, id).await.map_err(explain)?;
                answer(as_json, &cancelled, |_| format!("cancelled #{id}\n"))
            }
        }
    })
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| "—".to_owned(), clean)
}

fn render_list(list: &Value) -> String {
    let empty = Vec::new();
    let all = list["schedules"].as_array().unwrap_or(&empty);
    let mut table = Table::new(&["ID", "FLAG", "DUE", "STATUS", "CHANGE", "BY", "NOTE"]);
    for s in all {
        let change = &s["change"];
        let what = if change.get("delete").is_some() {
            "delete".to_owned()
        } else if let Some(p) = change.get("patch") {
            format!("patch {}", clean(&p.to_string()))
        } else {
            "replace".to_owned()
        };
        let note = match s["status"].as_str() {
            Some("applied") => match s["late_seconds"].as_f64() {
                Some(l) if l >= 5.0 => {
                    format!("revision {}, {} s late", s["applied_revision"], l.round())
                }
                _ => format!("revision {}", s["applied_revision"]),
            },
            Some("failed") => text(&s["error"]),
            _ => String::new(),
        };
        table.row(vec![
            s["id"].to_string(),
            text(&s["flag"]),
            s["due_local"]
                .as_str()
                .map_or_else(|| text(&s["due_at"]), clean),
            text(&s["status"]),
            what,
            text(&s["created_by"]),
            note,
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("{}\n", count(all.len(), "schedule", "schedules")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedules_as_a_table() {
        let out = render_list(&json!({"schedules": [
            {"id": 2, "flag": "launch", "due_at": "2030-07-01T07:00:00Z",
             "due_local": "2030-07-01T09:00:00+02:00[Europe/Paris]", "status": "pending",
             "change": {"patch": {"enabled": true}}, "created_by": "admin"},
            {"id": 1, "flag": "old", "due_at": "2026-12-01T00:00:00Z", "status": "applied",
             "change": {"delete": true}, "created_by": "admin", "applied_revision": 7, "late_seconds": 61.2}
        ]}));
        assert!(
            out.contains("2030-07-01T09:00:00+02:00[Europe/Paris]"),
            "{out}"
        );
        assert!(out.contains("patch {\"enabled\":true}"), "{out}");
        assert!(out.contains("revision 7, 61 s late"), "{out}");
        assert!(out.ends_with("2 schedules\n"), "{out}");
    }
}
