//! `guidon flags …`: read and change the flags of an environment on a
//! server. Each command is one or two admin calls; `--json` prints the
//! answer as JSON instead of a summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use guidon_client::admin::{AdminClient, Body};
use guidon_engine::Format;
use guidon_engine::impact::{FlagImpact, Outcome};
use guidon_engine::model::Flag;
use serde::Serialize;
use serde_json::Value;

use crate::input::Input;
use crate::output::{
    Table, answer, clean, count, date_ms, emit, json, noun, quoted, shorten, thousands,
};
use crate::remote::{RemoteArgs, block_on, explain};

#[derive(clap::Args)]
pub(crate) struct FlagsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: FlagsCommand,
}

#[derive(Subcommand)]
pub(crate) enum FlagsCommand {
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
    /// Turn a flag on, keeping its rollout, rules and variants (a no-op if
    /// it is on already).
    Enable {
        /// The flag's key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
    },
    /// Turn a flag off, keeping its rollout, rules and variants for when it
    /// is turned on again (a no-op if it is off already).
    Disable {
        /// The flag's key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
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
    /// Impact preview: evaluate the flag as it is and as FILE proposes,
    /// with every flag depending on it, over the contexts; print who moves
    /// from what to what. Nothing is stored.
    Preview {
        /// The flag's key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
        /// The proposed flag (JSON, or YAML when it ends in .yaml/.yml; `-` reads JSON from stdin).
        #[arg(long, short)]
        file: PathBuf,
        /// FILE is a JSON merge patch of the current flag, not a whole flag.
        #[arg(long)]
        patch: bool,
        /// The contexts, one JSON object per line (JSON Lines, as `guidon eval --contexts`).
        #[arg(long, value_name = "FILE.jsonl")]
        contexts: Option<PathBuf>,
        /// Affected contexts listed per flag.
        #[arg(long, default_value_t = 5)]
        examples: usize,
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

pub(crate) fn run(args: FlagsArgs) -> anyhow::Result<ExitCode> {
    let out = Out {
        client: args.remote.client()?,
        json: args.remote.json,
    };
    let command = args.command;
    block_on(async move {
        match command {
            FlagsCommand::List { env } => out.list(&env).await,
            FlagsCommand::Get { key, env } => out.get(&env, &key).await,
            FlagsCommand::Set {
                env,
                file,
                if_version,
            } => out.set(&env, &file, if_version).await,
            FlagsCommand::Delete {
                key,
                env,
                if_version,
            } => out.delete(&env, &key, if_version).await,
            FlagsCommand::Toggle {
                key,
                env,
                if_version,
            } => out.toggle(&env, &key, if_version).await,
            FlagsCommand::Enable { key, env } => out.set_enabled(&env, &key, true).await,
            FlagsCommand::Disable { key, env } => out.set_enabled(&env, &key, false).await,
            FlagsCommand::History { key, env } => out.history(&env, &key).await,
            FlagsCommand::Revert { key, env, version } => out.revert(&env, &key, version).await,
            FlagsCommand::Preview {
                key,
                env,
                file,
                patch,
                contexts,
                examples,
            } => {
                out.preview(&env, &key, &file, patch, contexts.as_deref(), examples)
                    .await
            }
            FlagsCommand::Export { env, yaml } => out.export(&env, yaml).await,
            FlagsCommand::Import { env, file } => out.import(&env, &file).await,
        }
    })
}

/// The client, and whether to print JSON.
struct Out {
    client: AdminClient,
    json: bool,
}

impl Out {
    /// The answer as JSON with `--json`, else its summary.
    fn answer<T: Serialize>(
        &self,
        value: &T,
        summary: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        answer(self.json, value, summary)
    }

    async fn list(&self, env: &str) -> anyhow::Result<()> {
        let export = self.client.export(env).await.map_err(explain)?;
        self.answer(&export.file, |file| {
            let mut table = Table::new(&[
                "KEY",
                "ENABLED",
                "VARIANTS",
                "RULES",
                "ROLLOUT",
                "DESCRIPTION",
            ]);
            for f in &file.flags {
                table.row(vec![
                    clean(&f.key),
                    on_off(f.enabled).to_owned(),
                    variant_keys(f),
                    f.rules.len().to_string(),
                    f.rollout
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |r| format!("{}%", r.percentage)),
                    shorten(&f.description, 60),
                ]);
            }
            let mut out = if table.is_empty() {
                String::new()
            } else {
                table.render()
            };
            let revision = export
                .revision
                .map(|r| format!(" at revision {r}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{} and {} in {}{revision}\n",
                count(file.flags.len(), "flag", "flags"),
                count(file.segments.len(), "segment", "segments"),
                quoted(env),
            ));
            out
        })
    }

    async fn get(&self, env: &str, key: &str) -> anyhow::Result<()> {
        let got = self.client.flag(env, key).await.map_err(explain)?;
        // The definition, its fields in the model's order.
        let definition = json(&got.flag)?;
        self.answer(&got, |got| {
            format!(
                "flag {} in {}: {}, version {}, revision {}\n{definition}",
                quoted(key),
                quoted(env),
                on_off(got.flag.enabled),
                got.version,
                got.revision,
            )
        })
    }

    async fn set(&self, env: &str, file: &Path, if_version: Option<u64>) -> anyhow::Result<()> {
        let input = Input::read(file)?;
        let parsed = input.value()?;
        let key = match parsed.get("key") {
            Some(Value::String(key)) => key.clone(),
            Some(other) => bail!("{}: \"key\" must be a string, not {other}", file.display()),
            None if parsed.get("flags").is_some() => bail!(
                "{} is a flag file (it has \"flags\"), not one flag: use `guidon flags import` to replace a whole environment",
                file.display()
            ),
            None if !parsed.is_object() => bail!("{} must hold one flag object", file.display()),
            None => bail!("{}: the flag has no \"key\"", file.display()),
        };
        // The file as written: the server names what is wrong in it.
        let body = Body::text(input.text, input.format);
        let written = self
            .client
            .set_flag(env, &key, body, if_version)
            .await
            .map_err(explain)?;
        self.answer(&written, |w| {
            format!(
                "{} flag {} in {}: version {}, revision {}\n",
                if w.created { "created" } else { "updated" },
                quoted(&key),
                quoted(env),
                w.version,
                w.revision,
            )
        })
    }

    async fn delete(&self, env: &str, key: &str, if_version: Option<u64>) -> anyhow::Result<()> {
        let deleted = self
            .client
            .delete_flag(env, key, if_version)
            .await
            .map_err(explain)?;
        self.answer(&deleted, |d| {
            format!(
                "deleted flag {} from {} (it was version {}), revision {}\n",
                quoted(key),
                quoted(env),
                d.version,
                d.revision,
            )
        })
    }

    async fn toggle(&self, env: &str, key: &str, if_version: Option<u64>) -> anyhow::Result<()> {
        let toggled = self
            .client
            .toggle_flag(env, key, if_version)
            .await
            .map_err(explain)?;
        self.answer(&toggled, |t| {
            format!(
                "flag {} in {} is now {}: version {}, revision {}\n",
                quoted(key),
                quoted(env),
                on_off(t.flag.enabled),
                t.version,
                t.revision,
            )
        })
    }

    async fn set_enabled(&self, env: &str, key: &str, enabled: bool) -> anyhow::Result<()> {
        let written = self
            .client
            .set_enabled(env, key, enabled)
            .await
            .map_err(explain)?;
        self.answer(&written, |w| {
            if w.unchanged {
                format!(
                    "flag {} in {} is already {}: version {}, nothing changed\n",
                    quoted(key),
                    quoted(env),
                    on_off(w.flag.enabled),
                    w.version,
                )
            } else {
                format!(
                    "flag {} in {} is now {}: version {}, revision {}\n",
                    quoted(key),
                    quoted(env),
                    on_off(w.flag.enabled),
                    w.version,
                    w.revision,
                )
            }
        })
    }

    async fn history(&self, env: &str, key: &str) -> anyhow::Result<()> {
        let history = self.client.flag_history(env, key).await.map_err(explain)?;
        self.answer(&history, |h| {
            if h.history.is_empty() {
                return format!("flag {} in {} has no history\n", quoted(key), quoted(env));
            }
            let mut table = Table::new(&["VERSION", "REVISION", "OP", "ACTOR", "AT", "CHANGE"]);
            for e in &h.history {
                table.row(vec![
                    e.version.to_string(),
                    e.revision.to_string(),
                    e.op.as_str().to_owned(),
                    shorten(&e.actor, 40),
                    date_ms(e.at_ms),
                    what_changed(e.before.as_ref(), e.after.as_ref()),
                ]);
            }
            table.render()
        })
    }

    async fn revert(&self, env: &str, key: &str, version: u64) -> anyhow::Result<()> {
        let reverted = self
            .client
            .revert_flag(env, key, version)
            .await
            .map_err(explain)?;
        self.answer(&reverted, |r| {
            format!(
                "reverted flag {} in {} to its version {version}: now version {}, revision {}\n",
                quoted(key),
                quoted(env),
                r.version,
                r.revision,
            )
        })
    }

    async fn export(&self, env: &str, yaml: bool) -> anyhow::Result<()> {
        if yaml && self.json {
            bail!("--yaml and --json cannot be used together");
        }
        if yaml {
            let text = self
                .client
                .export_text(env, Format::Yaml)
                .await
                .map_err(explain)?;
            if !text.ends_with('\n') {
                return emit(&format!("{text}\n"));
            }
            return emit(&text);
        }
        let export = self.client.export(env).await.map_err(explain)?;
        emit(&json(&export.file)?)
    }

    async fn import(&self, env: &str, file: &Path) -> anyhow::Result<()> {
        let input = Input::read(file)?;
        // A file that is not even JSON/YAML is named here, not by the server.
        let parsed = input.value()?;
        if parsed.get("key").is_some() && parsed.get("flags").is_none() {
            bail!(
                "{} holds one flag, not a flag file: use `guidon flags set` for one flag (import would delete every other flag)",
                file.display()
            );
        }
        let imported = self
            .client
            .import(env, Body::text(input.text, input.format))
            .await
            .map_err(explain)?;
        self.answer(&imported, |i| {
            let revision = i.revision;
            if i.changes.is_empty() {
                return format!(
                    "nothing to change in {}: it already holds this file (revision {revision})\n",
                    quoted(env)
                );
            }
            let mut out = format!(
                "imported into {}: revision {revision}, {}\n",
                quoted(env),
                count(i.changes.len(), "change", "changes")
            );
            let mut table = Table::new(&["OP", "KIND", "KEY", "VERSION"]);
            for c in &i.changes {
                table.row(vec![
                    c.op.as_str().to_owned(),
                    c.kind.as_str().to_owned(),
                    clean(&c.key),
                    format!("version {}", c.version),
                ]);
            }
            // The changes, indented under the summary, without the header.
            for line in table.render().lines().skip(1) {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
            out
        })
    }
}

impl Out {
    async fn preview(
        &self,
        env: &str,
        key: &str,
        file: &Path,
        patch: bool,
        contexts: Option<&Path>,
        examples: usize,
    ) -> anyhow::Result<()> {
        let proposed = Input::read(file)?.value()?;
        let mut request = serde_json::Map::new();
        request.insert((if patch { "patch" } else { "flag" }).into(), proposed);
        if let Some(path) = contexts {
            if path == Path::new("-") && file == Path::new("-") {
                bail!("--file - and --contexts - cannot both read standard input");
            }
            // Sent as written: the server reads it with `guidon eval
            // --contexts`'s parser and names the line at fault.
            request.insert(
                "contexts_jsonl".into(),
                Value::String(Input::read(path)?.text),
            );
        }
        request.insert("max_examples".into(), Value::from(examples));
        let answer = self
            .client
            .preview_flag(env, key, &Value::Object(request))
            .await
            .map_err(explain)?;
        if self.json {
            return emit(&json(&answer)?);
        }
        let flag: FlagImpact = serde_json::from_value(answer["flag"].clone())
            .map_err(|e| anyhow::anyhow!("the server's preview does not parse: {e}"))?;
        let dependents: Vec<FlagImpact> =
            serde_json::from_value(answer["dependents"].clone()).unwrap_or_default();
        let total = answer["contexts"].as_u64().unwrap_or(0);
        let revision = answer["revision"].as_u64().unwrap_or(0);
        let mut text = format!(
            "flag {} in {} (revision {revision}) over {} {}: {} {} would change\n",
            quoted(key),
            quoted(env),
            thousands(total),
            noun(total, "context", "contexts"),
            thousands(flag.changed as u64),
            noun(flag.changed as u64, "context", "contexts"),
        );
        if let Some(sample) = answer.get("sample").filter(|s| !s.is_null()) {
            let used = sample["size"].as_u64().unwrap_or(0);
            text.push_str(&format!(
                "{} from the recent-contexts sample ({} seen since {})\n",
                thousands(used),
                thousands(sample["seen"].as_u64().unwrap_or(0)),
                sample["oldest"]
                    .as_str()
                    .map_or_else(|| "-".to_owned(), clean),
            ));
        }
        text.push_str(&matrix(&flag));
        for d in &dependents {
            text.push_str(&format!(
                "depends on it: {}: {} {} would change\n",
                quoted(&d.flag),
                thousands(d.changed as u64),
                noun(d.changed as u64, "context", "contexts"),
            ));
            if d.changed > 0 {
                text.push_str(&matrix(d));
            }
        }
        if !flag.examples.is_empty() {
            text.push_str("for example:\n");
            for e in &flag.examples {
                text.push_str(&format!(
                    "  #{} {}: {} -> {}\n",
                    e.index,
                    e.unit
                        .as_deref()
                        .map_or_else(|| "(no unit)".to_owned(), clean),
                    outcome(&e.from),
                    outcome(&e.to),
                ));
            }
        }
        emit(&text)
    }
}

/// A flag's transition matrix as a table.
fn matrix(flag: &FlagImpact) -> String {
    let mut table = Table::new(&["FROM", "TO", "CONTEXTS", "SHARE"]).right(&[2, 3]);
    for t in &flag.transitions {
        table.row(vec![
            outcome(&t.from),
            outcome(&t.to),
            thousands(t.count as u64),
            format!("{:.1}%", t.share * 100.0),
        ]);
    }
    table.render()
}

/// What a context is served, in a few words: the variant, or on/off, or
/// the value.
fn outcome(o: &Outcome) -> String {
    if o.not_found {
        return "(no such flag)".to_owned();
    }
    match (&o.variant, &o.value) {
        (Some(v), _) if o.enabled => clean(v),
        (Some(v), _) => format!("{} (off)", clean(v)),
        (None, Some(Value::Bool(_)) | None) => on_off(o.enabled).to_owned(),
        (None, Some(value)) => shorten(&value.to_string(), 40),
    }
}

fn on_off(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

fn variant_keys(flag: &Flag) -> String {
    let keys: Vec<String> = flag.variants.iter().map(|v| clean(&v.key)).collect();
    if keys.is_empty() {
        "-".to_owned()
    } else {
        shorten(&keys.join(","), 40)
    }
}

/// What one history entry changed: created, deleted, or the top-level
/// fields that differ (with `enabled`'s old and new value).
fn what_changed(before: Option<&Value>, after: Option<&Value>) -> String {
    fn present(v: Option<&Value>) -> Option<&Value> {
        v.filter(|v| !v.is_null())
    }
    fn switch(v: Option<&Value>) -> &'static str {
        match v {
            Some(Value::Bool(b)) => on_off(*b),
            _ => "?",
        }
    }
    match (present(before), present(after)) {
        (None, Some(_)) => "created".to_owned(),
        (Some(_), None) => "deleted".to_owned(),
        (None, None) => "-".to_owned(),
        (Some(before), Some(after)) => {
            let empty = serde_json::Map::new();
            let b = before.as_object().unwrap_or(&empty);
            let a = after.as_object().unwrap_or(&empty);
            let mut fields: Vec<&String> = b.keys().chain(a.keys()).collect();
            fields.sort();
            fields.dedup();
            let changed: Vec<String> = fields
                .into_iter()
                .filter(|f| b.get(*f) != a.get(*f))
                .map(|f| {
                    if f == "enabled" {
                        format!(
                            "enabled {}→{}",
                            switch(b.get("enabled")),
                            switch(a.get("enabled"))
                        )
                    } else {
                        clean(f)
                    }
                })
                .collect();
            if changed.is_empty() {
                "no change".to_owned()
            } else {
                changed.join(", ")
            }
        }
    }
}
