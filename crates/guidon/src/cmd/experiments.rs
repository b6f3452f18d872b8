//! `guidon experiments results|create|list|stop`: experiments on a server.
//! `results KEY` reads an experiment of the catalogue, every metric;
//! `results FLAG --metric NAME` one metric of a flag. Both print tables a
//! product manager can read (variants as rows: units, conversions, rate,
//! relative and absolute lift with their intervals, p-value, chance to
//! win, verdict), then the health checks and warnings. `--json` prints
//! the server's answer as JSON.

use std::fmt::Write as _;
use std::process::ExitCode;

use guidon_client::admin::{Body, ResultsQuery};
use serde_json::{Value, json};

use crate::output::{Table, answer, clean, noun, thousands};
use crate::remote::{RemoteArgs, block_on, explain};

#[derive(clap::Args)]
pub(crate) struct ExperimentsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: ExperimentsCommand,
}

#[derive(clap::Subcommand)]
pub(crate) enum ExperimentsCommand {
    /// An experiment's results, every metric as its definition says; or,
    /// with --metric, one metric of a flag: per variant, lift with its
    /// interval, p-value, chance to win, verdict, and the health checks
    /// (needs an admin token).
    Results {
        /// The experiment (or, with --metric, the flag).
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
        /// Read one metric (the conversions' name, e.g. purchase) of the flag KEY.
        #[arg(long)]
        metric: Option<String>,
        /// frequentist (fixed horizon), sequential (valid however often you
        /// look) or bayesian.
        #[arg(long, value_parser = ["frequentist", "sequential", "bayesian"])]
        method: Option<String>,
        /// binomial (converted or not) or continuous (sum of values per unit).
        #[arg(long, value_parser = ["binomial", "continuous"])]
        kind: Option<String>,
        /// Correction of the p-values across the treatments.
        #[arg(long, value_parser = ["none", "holm", "bh"])]
        correction: Option<String>,
        /// Count conversions only within this many hours of the first exposure.
        #[arg(long, value_name = "HOURS")]
        window_hours: Option<f64>,
        /// Significance level: intervals are 1 − alpha (default 0.05).
        #[arg(long)]
        alpha: Option<f64>,
        /// Bayesian: mean of a normal prior on the lift (needs --prior-variance).
        #[arg(long, allow_hyphen_values = true)]
        prior_mean: Option<f64>,
        /// Bayesian: variance of a normal prior on the lift (flat without it).
        #[arg(long)]
        prior_variance: Option<f64>,
        /// CUPED: adjust by each unit's value of the metric in this many
        /// days before its first exposure.
        #[arg(long, value_name = "DAYS")]
        cuped_days: Option<f64>,
    },
    /// Create or replace an experiment: a flag, its metrics from the
    /// catalogue (`guidon metrics`), and how to read them.
    Create {
        key: String,
        #[arg(long)]
        env: String,
        /// A file holding the experiment (JSON or YAML); or the options below.
        #[arg(long, conflicts_with_all = ["flag", "primary", "secondary", "guardrail", "hypothesis"])]
        file: Option<std::path::PathBuf>,
        /// The flag whose variants are compared.
        #[arg(long)]
        flag: Option<String>,
        /// The metric the decision is about.
        #[arg(long)]
        primary: Option<String>,
        /// A further metric (repeatable).
        #[arg(long)]
        secondary: Vec<String>,
        /// A metric that must not get worse (repeatable).
        #[arg(long)]
        guardrail: Vec<String>,
        #[arg(long)]
        hypothesis: Option<String>,
        /// RFC 3339; default now.
        #[arg(long)]
        start: Option<String>,
        #[arg(long, value_parser = ["frequentist", "sequential", "bayesian"])]
        method: Option<String>,
        #[arg(long)]
        alpha: Option<f64>,
        /// Correction across the primary and secondary metrics and arms.
        #[arg(long, value_parser = ["holm", "bh", "none"])]
        correction: Option<String>,
        /// The confidence sequence's N* (sequential): total units at which it is tightest.
        #[arg(long, value_name = "UNITS")]
        sequential_tuning: Option<f64>,
        #[arg(long, value_name = "HOURS")]
        window_hours: Option<f64>,
        /// CUPED: adjust by each unit's value in this many days before exposure.
        #[arg(long, value_name = "DAYS")]
        cuped_days: Option<f64>,
        /// Only if the experiment is still at this version (0: only if new).
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
    },
    /// How many units (and days) the primary metric needs to detect an
    /// effect, from the experiment's own traffic and baseline.
    Plan {
        key: String,
        #[arg(long)]
        env: String,
        /// The relative effect to detect (0.05 = 5 %).
        #[arg(long)]
        mde: Option<f64>,
        /// Power (default 0.8).
        #[arg(long)]
        power: Option<f64>,
        /// Also: what this many days of traffic could detect.
        #[arg(long)]
        days: Option<f64>,
        /// The control's rate, before the data has one.
        #[arg(long)]
        baseline_rate: Option<f64>,
        /// Exposed units per day, before the data has them.
        #[arg(long)]
        daily_units: Option<f64>,
    },
    /// Cumulative results at the end of each day since the start.
    Daily {
        key: String,
        #[arg(long)]
        env: String,
        /// One of the experiment's metrics (default: the primary).
        #[arg(long)]
        metric: Option<String>,
    },
    /// The environment's experiments with their status.
    List {
        #[arg(long)]
        env: String,
    },
    /// Stop an experiment now: what happens afterwards does not count.
    Stop {
        key: String,
        #[arg(long)]
        env: String,
    },
}

/// Runs `guidon experiments …`.
pub(crate) fn run(args: ExperimentsArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let as_json = args.remote.json;
    match args.command {
        ExperimentsCommand::Results {
            key,
            env,
            metric: None,
            method: None,
            kind: None,
            correction: None,
            window_hours: None,
            alpha: None,
            prior_mean: None,
            prior_variance: None,
            cuped_days: None,
        } => block_on(async move {
            let report = client
                .experiment_report(&env, &key)
                .await
                .map_err(explain)?;
            answer(as_json, &report, render_report)
        }),
        ExperimentsCommand::Results { metric: None, .. } => Err(anyhow::anyhow!(
            "an experiment is read as its definition says: --method, --kind, --correction, --window-hours, --alpha, the priors and --cuped-days need --metric NAME (one metric of a flag)"
        )),
        ExperimentsCommand::Results {
            key: flag,
            env,
            metric: Some(metric),
            method,
            kind,
            correction,
            window_hours,
            alpha,
            prior_mean,
            prior_variance,
            cuped_days,
        } => block_on(async move {
            let query = ResultsQuery {
                metric,
                method,
                kind,
                correction,
                window_hours,
                alpha,
                prior_mean,
                prior_variance,
                cuped_days,
            };
            let results = client
                .experiment_results(&env, &flag, &query)
                .await
                .map_err(explain)?;
            answer(as_json, &results, render_results)
        }),
        ExperimentsCommand::Create {
            key,
            env,
            file,
            flag,
            primary,
            secondary,
            guardrail,
            hypothesis,
            start,
            method,
            alpha,
            correction,
            sequential_tuning,
            window_hours,
            cuped_days,
            if_version,
        } => block_on(async move {
            let body = match file {
                Some(path) => {
                    let input = crate::input::Input::read(&path)?;
                    input.value()?;
                    Body::text(input.text, input.format)
                }
                None => {
                    let (Some(flag), Some(primary)) = (flag, primary) else {
                        anyhow::bail!(
                            "give --file FILE, or --flag FLAG and --primary METRIC (and any --secondary, --guardrail)"
                        );
                    };
                    let mut e = serde_json::Map::new();
                    e.insert("flag".into(), json!(flag));
                    e.insert("primary_metric".into(), json!(primary));
                    e.insert("secondary_metrics".into(), json!(secondary));
                    e.insert("guardrail_metrics".into(), json!(guardrail));
                    for (name, value) in [
                        ("hypothesis", hypothesis.map(Value::from)),
                        ("start", start.map(Value::from)),
                        ("method", method.map(Value::from)),
                        ("correction", correction.map(Value::from)),
                        ("alpha", alpha.map(Value::from)),
                        ("sequential_tuning", sequential_tuning.map(Value::from)),
                        ("window_hours", window_hours.map(Value::from)),
                        ("cuped_days", cuped_days.map(Value::from)),
                    ] {
                        if let Some(v) = value {
                            e.insert(name.into(), v);
                        }
                    }
                    Body::json(&Value::Object(e)).map_err(explain)?
                }
            };
            let stored = client
                .set_experiment(&env, &key, body, if_version)
                .await
                .map_err(explain)?;
            answer(as_json, &stored, |s| {
                format!(
                    "experiment {} in {env}: version {}, from {}\n",
                    clean(&key),
                    s["version"].as_u64().unwrap_or(0),
                    text(&s["start"])
                )
            })
        }),
        ExperimentsCommand::Plan {
            key,
            env,
            mde,
            power,
            days,
            baseline_rate,
            daily_units,
        } => block_on(async move {
            let query: Vec<(&str, f64)> = [
                ("mde", mde),
                ("power", power),
                ("days", days),
                ("baseline_rate", baseline_rate),
                ("daily_units", daily_units),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            let plan = client
                .experiment_plan(&env, &key, &query)
                .await
                .map_err(explain)?;
            answer(as_json, &plan, render_plan)
        }),
        ExperimentsCommand::Daily { key, env, metric } => block_on(async move {
            let daily = client
                .experiment_daily(&env, &key, metric.as_deref())
                .await
                .map_err(explain)?;
            answer(as_json, &daily, render_daily)
        }),
        ExperimentsCommand::List { env } => block_on(async move {
            let list = client.experiments(&env).await.map_err(explain)?;
            answer(as_json, &list, render_list)
        }),
        ExperimentsCommand::Stop { key, env } => block_on(async move {
            let stopped = client.stop_experiment(&env, &key).await.map_err(explain)?;
            answer(as_json, &stopped, |s| {
                format!(
                    "experiment {} in {env} stopped at {}\n",
                    clean(&key),
                    text(&s["stop"])
                )
            })
        }),
    }
}

fn render_plan(plan: &Value) -> String {
    let mut out = String::new();
    let baseline = &plan["baseline"];
    let base = match (baseline["rate"].as_f64(), baseline["mean"].as_f64()) {
        (Some(r), _) => format!("rate {}", percent(r, 2)),
        (None, Some(m)) => format!(
            "mean {} (sd {})",
            trim_number(m, 4),
            trim_number(baseline["sd"].as_f64().unwrap_or(f64::NAN), 4)
        ),
        _ => "—".to_owned(),
    };
    let _ = writeln!(
        out,
        "{} · {}: baseline {base}; α {}, power {}",
        text(&plan["experiment"]),
        text(&plan["metric"]),
        trim_number(plan["alpha"].as_f64().unwrap_or(f64::NAN), 4),
        trim_number(plan["power"].as_f64().unwrap_or(f64::NAN), 2),
    );
    if let (Some(mde), Some(n)) = (plan["mde"].as_f64(), plan["units_per_arm"].as_u64()) {
        let _ = writeln!(
            out,
            "To detect {}: {} units per arm ({} in all)",
            signed_percent(mde),
            thousands(n),
            thousands(plan["total_units"].as_f64().unwrap_or(0.0) as u64)
        );
    }
    let observed = &plan["observed"];
    if let Some(daily) = observed["daily_units"].as_f64() {
        let _ = writeln!(
            out,
            "Traffic: {} units a day over {} days",
            thousands(daily.round() as u64),
            trim_number(observed["days_elapsed"].as_f64().unwrap_or(0.0), 1)
        );
    }
    if let Some(d) = plan["days_needed"].as_f64() {
        let _ = writeln!(
            out,
            "Duration: {} days in all, {} to go",
            trim_number(d, 1),
            trim_number(plan["days_remaining"].as_f64().unwrap_or(0.0), 1)
        );
    }
    if let Some(m) = plan["mde_now"].as_f64() {
        let _ = writeln!(out, "Detectable now: {}", signed_percent(m));
    }
    if let (Some(days), Some(m)) = (plan["days"].as_f64(), plan["mde_at_days"].as_f64()) {
        let _ = writeln!(
            out,
            "Detectable in {} days: {}",
            trim_number(days, 1),
            signed_percent(m)
        );
    }
    out
}

fn render_daily(daily: &Value) -> String {
    let empty = Vec::new();
    let days = daily["days"].as_array().unwrap_or(&empty);
    let arms: Vec<String> = days
        .first()
        .and_then(|d| d["variants"].as_array())
        .map(|v| v.iter().map(|v| text(&v["variant"])).collect())
        .unwrap_or_default();
    let mut headers = vec!["DAY".to_owned()];
    for a in &arms {
        headers.push(format!("{a} UNITS"));
        headers.push(format!("{a} CONV."));
    }
    for a in arms.iter().skip(1) {
        headers.push(format!("{a} LIFT (CI)"));
    }
    let mut table = Table::new(&headers);
    for d in days {
        let mut row = vec![text(&d["day"])];
        for v in d["variants"].as_array().unwrap_or(&empty) {
            row.push(count(&v["units"]));
            row.push(count(&v["conversions"]));
        }
        for c in d["comparisons"].as_array().unwrap_or(&empty) {
            row.push(c["relative"]["lift"].as_f64().map_or_else(
                || "—".to_owned(),
                |l| {
                    format!(
                        "{} ({} … {})",
                        signed_percent(l),
                        signed_percent(c["relative"]["ci"]["lower"].as_f64().unwrap_or(f64::NAN)),
                        signed_percent(c["relative"]["ci"]["upper"].as_f64().unwrap_or(f64::NAN))
                    )
                },
            ));
        }
        table.row(row);
    }
    let mut out = format!(
        "{} · {} · cumulative by day (UTC)\n",
        text(&daily["experiment"]),
        text(&daily["metric"])
    );
    out.push_str(&table.render());
    let _ = writeln!(out, "{}", text(&daily["note"]));
    out
}

fn render_list(answer: &Value) -> String {
    let empty = Vec::new();
    let experiments = answer["experiments"].as_array().unwrap_or(&empty);
    let mut table = Table::new(&[
        "EXPERIMENT",
        "FLAG",
        "STATUS",
        "PRIMARY",
        "SECONDARY",
        "GUARDRAILS",
        "START",
        "STOP",
    ]);
    let list = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    for e in experiments {
        table.row(vec![
            text(&e["key"]),
            text(&e["flag"]),
            text(&e["status"]),
            text(&e["primary_metric"]),
            list(&e["secondary_metrics"]),
            list(&e["guardrail_metrics"]),
            text(&e["start"]),
            text(&e["stop"]),
        ]);
    }
    let mut out = table.render();
    let _ = writeln!(
        out,
        "{}",
        noun(
            experiments.len() as u64,
            "1 experiment",
            &format!("{} experiments", experiments.len())
        )
    );
    out
}

/// An experiment's results (every metric) as text: what it is and how it
/// is read, then one table per metric (primary first), the guardrails'
/// verdicts, a withheld verdict, the sample-ratio check and warnings.
pub(crate) fn render_report(report: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "experiment {} · flag {} · {} · {}",
        text(&report["experiment"]),
        text(&report["flag"]),
        text(&report["env"]),
        text(&report["status"]),
    );
    if let Some(h) = report["hypothesis"].as_str() {
        let _ = writeln!(out, "Hypothesis: {}", clean(h));
    }
    let correction = &report["correction"];
    let exposures = &report["exposures"];
    let units = exposures["units"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "{} from {} to {}; {} {} exposed; correction {} over {} {} ({})",
        text(&report["method"]),
        text(&report["start"]),
        report["stop"]
            .as_str()
            .map_or_else(|| "now".to_owned(), clean),
        thousands(units),
        noun(units, "unit", "units"),
        text(&correction["method"]),
        correction["tests"].as_u64().unwrap_or(0),
        noun(correction["tests"].as_u64().unwrap_or(0), "test", "tests"),
        text(&correction["applies_to"]),
    );
    let empty = Vec::new();
    for m in report["metrics"].as_array().unwrap_or(&empty) {
        let definition = &m["definition"];
        let cap = m["cap"]
            .as_f64()
            .map(|c| format!(", capped at {}", trim_number(c, 4)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n{} ({}, {}{cap}, {} is better)",
            text(&m["key"]),
            text(&m["role"]),
            text(&m["kind"]),
            definition["direction"].as_str().unwrap_or("higher"),
        );
        let mut one = m.clone();
        one["method"] = report["method"].clone();
        one["alpha"] = report["alpha"].clone();
        one["kind"] = json!(if m["kind"] == "binomial" {
            "binomial"
        } else {
            "continuous"
        });
        comparison_table(&mut out, &one);
        for c in m["comparisons"].as_array().unwrap_or(&empty) {
            let outcome = c["outcome"].as_str().unwrap_or("—");
            if matches!(outcome, "better" | "worse") {
                let _ = writeln!(
                    out,
                    "{}: {} for {}",
                    text(&c["variant"]),
                    outcome.to_uppercase(),
                    text(&m["key"])
                );
            }
        }
    }
    let guardrails = report["guardrails"].as_array().unwrap_or(&empty);
    if !guardrails.is_empty() {
        out.push_str("\nGuardrails:\n");
        for g in guardrails {
            let status = g["status"].as_str().unwrap_or("—");
            let by = g["breached_by"]
                .as_array()
                .filter(|b| !b.is_empty())
                .map(|b| format!(" by {}", b.iter().map(text).collect::<Vec<_>>().join(", ")))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} {}{by}: {}",
                text(&g["metric"]),
                if status == "breached" {
                    "BREACHED".to_owned()
                } else {
                    status.to_owned()
                },
                text(&g["meaning"]),
            );
        }
    }
    health_lines(&mut out, report);
    out
}

/// The results JSON of `GET /api/v1/envs/{env}/experiments/{flag}/results`
/// as a readable table: a heading naming the experiment and how it was
/// analyzed, one row per variant (control first: units, conversions, rate
/// with its interval, mean value per unit, then for each treatment the lift
/// over control with its interval, the p-value and the chance to win), the
/// sample-ratio check and every warning. Fields the answer lacks are shown
/// as `—`, so an older or newer server still gives a table.
pub(crate) fn render_results(results: &Value) -> String {
    let mut out = String::new();
    let method = results["method"].as_str().unwrap_or("frequentist");
    let alpha = results["alpha"].as_f64().unwrap_or(0.05);
    let level = format!("{}%", trim_number((1.0 - alpha) * 100.0, 1));
    let _ = writeln!(
        out,
        "{} · metric {} ({}) · {}",
        text(&results["flag"]),
        text(&results["metric"]),
        results["kind"].as_str().unwrap_or("binomial"),
        text(&results["env"]),
    );
    let correction = match results["correction"].as_str() {
        None | Some("none") => "no correction".to_owned(),
        Some("holm") => "Holm correction".to_owned(),
        Some("benjamini_hochberg") => "Benjamini–Hochberg correction".to_owned(),
        Some(other) => format!("{other} correction"),
    };
    let window = match results["window_hours"].as_f64() {
        Some(h) => format!("conversions within {} h of exposure", trim_number(h, 2)),
        None => "no conversion window".to_owned(),
    };
    let exposures = &results["exposures"];
    let _ = writeln!(
        out,
        "{method}, {level} intervals, {correction}, {window}; {} {} exposed, {} in several variants (excluded)",
        count(&exposures["units"]),
        noun(exposures["units"].as_u64().unwrap_or(0), "unit", "units"),
        count(&exposures["multiple_exposure_units"]),
    );
    out.push('\n');

    comparison_table(&mut out, results);
    health_lines(&mut out, results);
    out
}

/// The table of one metric's results (`variants`, `comparisons` with
/// their `summary`, `kind`, `method`, `alpha`, optional `bayesian`), then
/// the test the verdicts follow, every note and the chance to be best.
fn comparison_table(out: &mut String, results: &Value) {
    let method = results["method"].as_str().unwrap_or("frequentist");
    let alpha = results["alpha"].as_f64().unwrap_or(0.05);
    let level = format!("{}%", trim_number((1.0 - alpha) * 100.0, 1));
    let lift_header = match method {
        "sequential" => format!("LIFT ({level} CONF. SEQUENCE)"),
        "bayesian" => format!("LIFT ({level} CREDIBLE)"),
        _ => format!("LIFT ({level} CI)"),
    };
    let p_header = if method == "sequential" {
        "P-VALUE (ALWAYS VALID)"
    } else {
        "P-VALUE"
    };
    let binomial = results["kind"].as_str().unwrap_or("binomial") == "binomial";
    let headers = [
        "VARIANT",
        "UNITS",
        "CONVERSIONS",
        &format!("RATE ({level} CI)"),
        "MEAN",
        &lift_header,
        if binomial {
            "ABSOLUTE LIFT (POINTS)"
        } else {
            "ABSOLUTE LIFT"
        },
        p_header,
        "CHANCE TO WIN",
        "VERDICT",
    ];
    let empty = Vec::new();
    let variants = results["variants"].as_array().unwrap_or(&empty);
    let comparisons = results["comparisons"].as_array().unwrap_or(&empty);
    let mut any_significant = false;
    let mut tests: Vec<&str> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut table = Table::new(&headers).right(&[1, 2]);
    for (i, v) in variants.iter().enumerate() {
        let key = text(&v["key"]);
        let rate = match (v["rate"].as_f64(), v["rate_interval"].as_object()) {
            (Some(rate), Some(ci)) => format!(
                "{} ({} … {})",
                percent(rate, 2),
                percent(
                    ci.get("lower").and_then(Value::as_f64).unwrap_or(f64::NAN),
                    2
                ),
                percent(
                    ci.get("upper").and_then(Value::as_f64).unwrap_or(f64::NAN),
                    2
                ),
            ),
            _ => "—".to_owned(),
        };
        let mean = v["mean"]
            .as_f64()
            .map_or_else(|| "—".to_owned(), |m| trim_number(m, 4));
        let mut row = vec![
            if i == 0 {
                format!("{key} (control)")
            } else {
                key.clone()
            },
            count(&v["units"]),
            count(&v["conversions"]),
            rate,
            mean,
        ];
        let comparison = comparisons.iter().find(|c| c["variant"] == v["key"]);
        match comparison.map(|c| &c["summary"]) {
            None => row.extend(std::iter::repeat_n("—".to_owned(), 5)),
            Some(summary) => {
                let significant = summary["significant"].as_bool().unwrap_or(false);
                any_significant |= significant;
                let star = |scale: &str| {
                    if significant && summary["scale"].as_str() == Some(scale) {
                        " *"
                    } else {
                        ""
                    }
                };
                let relative = reading(&summary["relative"], signed_percent)
                    .map_or_else(|| "n/a".to_owned(), |r| format!("{r}{}", star("relative")));
                let absolute_format = if binomial {
                    signed_points
                } else {
                    signed_number
                };
                let absolute = reading(&summary["absolute"], absolute_format)
                    .map_or_else(|| "n/a".to_owned(), |r| format!("{r}{}", star("absolute")));
                row.push(relative);
                row.push(absolute);
                row.push(
                    summary["p_value"]
                        .as_f64()
                        .map_or_else(|| "—".to_owned(), p_value),
                );
                row.push(chance(summary));
                row.push(match summary["verdict"].as_str() {
                    Some("withheld") => "WITHHELD".to_owned(),
                    Some(verdict) => verdict.to_owned(),
                    None => "—".to_owned(),
                });
                if let Some(test) = summary["test"].as_str()
                    && !tests.contains(&test)
                {
                    tests.push(test);
                }
                for note in summary["notes"].as_array().unwrap_or(&empty) {
                    notes.push(format!("{key}: {}", text(note)));
                }
            }
        }
        table.row(row);
    }
    out.push_str(&table.render());
    if any_significant {
        let rule = if method == "bayesian" {
            format!(
                "chance to win above {level} or below {}",
                percent(alpha / 2.0, 1)
            )
        } else {
            format!("p-value below {}", trim_number(alpha, 4))
        };
        let _ = writeln!(out, "* significant: {rule}");
    }
    if !tests.is_empty() {
        let described: Vec<&str> = tests.iter().map(|t| describe_test(t)).collect();
        let _ = writeln!(
            out,
            "Verdicts follow {}; relative intervals are on the log scale.",
            described.join(", ")
        );
    }
    for note in &notes {
        let _ = writeln!(out, "Note, {note}");
    }
    let cuped = &results["cuped"];
    if cuped["applied"].as_bool() == Some(true) {
        let reduction: Vec<String> = cuped["variance_reduction"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|r| r.as_f64().map_or_else(|| "—".to_owned(), |r| percent(r, 0)))
            .collect();
        let _ = writeln!(
            out,
            "CUPED over the {} days before exposure: θ = {}, variance reduced by {} (per variant)",
            trim_number(cuped["pre_exposure_days"].as_f64().unwrap_or(f64::NAN), 2),
            trim_number(cuped["theta"].as_f64().unwrap_or(f64::NAN), 4),
            reduction.join(", ")
        );
    }
    if let Some(best) = chance_to_be_best(results) {
        let _ = writeln!(out, "{best}");
    }
}

/// A withheld verdict, the sample-ratio check and every warning.
fn health_lines(out: &mut String, results: &Value) {
    let empty = Vec::new();
    if let Some(why) = results["verdict_withheld"].as_str() {
        let _ = writeln!(out, "\nVERDICT WITHHELD. {}", clean(why));
    }
    out.push('\n');

    let health = &results["health"];
    let srm = &health["srm"];
    let srm_line = match srm["status"].as_str() {
        Some("ok") => format!(
            "ok (p = {})",
            p_value(srm["p_value"].as_f64().unwrap_or(1.0))
        ),
        Some("mismatch") => format!(
            "MISMATCH (p = {})",
            p_value(srm["p_value"].as_f64().unwrap_or(0.0))
        ),
        Some("not_enough_data") => "not enough units yet".to_owned(),
        _ => "—".to_owned(),
    };
    let _ = writeln!(out, "Sample ratio: {srm_line}");
    let warnings = results["warnings"].as_array().unwrap_or(&empty);
    if warnings.is_empty() {
        out.push_str("No warnings.\n");
    } else {
        let _ = writeln!(out, "Warnings:");
        for w in warnings {
            let _ = writeln!(out, "  ! {}", text(w));
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => clean(s),
        Value::Null => "—".to_owned(),
        other => clean(&other.to_string()),
    }
}

/// A count from the answer with thousands separators, `—` when absent.
fn count(value: &Value) -> String {
    value.as_u64().map_or_else(|| "—".to_owned(), thousands)
}

/// `x` with at most `decimals` decimals, trailing zeros dropped.
fn trim_number(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "—".to_owned();
    }
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn percent(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{:.decimals$}%", x * 100.0)
    } else {
        "—".to_owned()
    }
}

fn signed_percent(x: f64) -> String {
    if x.is_finite() {
        format!("{:+.1}%", x * 100.0)
    } else {
        "—".to_owned()
    }
}

fn p_value(p: f64) -> String {
    if !p.is_finite() {
        "—".to_owned()
    } else if p < 0.0001 {
        "<0.0001".to_owned()
    } else {
        format!("{p:.4}")
    }
}

/// `±x (lower … upper)` of a headline reading (`{lift, ci}`), if present.
fn reading(value: &Value, format: fn(f64) -> String) -> Option<String> {
    let lift = value["lift"].as_f64()?;
    let ci = &value["ci"];
    Some(format!(
        "{} ({} … {})",
        format(lift),
        format(ci["lower"].as_f64().unwrap_or(f64::NAN)),
        format(ci["upper"].as_f64().unwrap_or(f64::NAN)),
    ))
}

/// A difference of rates in percentage points.
fn signed_points(x: f64) -> String {
    if x.is_finite() {
        format!("{:+.1}", x * 100.0)
    } else {
        "—".to_owned()
    }
}

fn signed_number(x: f64) -> String {
    if x.is_finite() {
        let s = trim_number(x, 4);
        if x >= 0.0 { format!("+{s}") } else { s }
    } else {
        "—".to_owned()
    }
}

fn describe_test(test: &str) -> &str {
    match test {
        "welch_absolute" => "the Welch t-test of the absolute difference",
        "confidence_sequence_absolute" => {
            "the always-valid confidence sequence of the absolute difference"
        }
        "chance_to_win_beta" => "the chance to win from the Beta posteriors of the rates",
        "chance_to_win_normal" => "the chance to win under a normal model of the lift",
        other => other,
    }
}

/// "Chance to be best: …; expected loss: …" for three or more arms of a
/// conversion metric.
fn chance_to_be_best(results: &Value) -> Option<String> {
    let bayesian = &results["bayesian"];
    let best = bayesian["chance_to_be_best"].as_array()?;
    let loss = bayesian["expected_loss"].as_array()?;
    let variants = results["variants"].as_array()?;
    if variants.len() < 3 || best.len() != variants.len() {
        return None;
    }
    let line: Vec<String> = variants
        .iter()
        .zip(best.iter().zip(loss))
        .map(|(v, (b, l))| {
            format!(
                "{} {} (expected loss {} points)",
                text(&v["key"]),
                percent(b.as_f64().unwrap_or(f64::NAN), 1),
                trim_number(l.as_f64().unwrap_or(f64::NAN) * 100.0, 2)
            )
        })
        .collect();
    Some(format!("Chance to be best: {}.", line.join(", ")))
}

fn chance(summary: &Value) -> String {
    summary["chance_to_win"]
        .as_f64()
        .map_or_else(|| "—".to_owned(), |c| percent(c, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer() -> Value {
        json!({
            "env": "production", "flag": "new_checkout_experiment", "metric": "purchase",
            "kind": "binomial", "method": "frequentist", "correction": "none", "alpha": 0.05,
            "window_hours": null, "unit_attribute": "user_id", "control": "control",
            "exposures": {"units": 1000, "analyzed_units": 1000, "multiple_exposure_units": 0,
                          "multiple_exposure_share": 0.0, "other_variant_units": 0},
            "variants": [
                {"key": "control", "weight": 50, "units": 482, "conversions": 81,
                 "rate": 0.16804979, "rate_interval": {"lower": 0.1374, "upper": 0.2038},
                 "mean": 16.803, "variance": 1166.2},
                {"key": "treatment", "weight": 50, "units": 518, "conversions": 130,
                 "rate": 0.25096525, "rate_interval": {"lower": 0.2156, "upper": 0.2899},
                 "mean": 25.094, "variance": 1579.0}
            ],
            "comparisons": [{"variant": "treatment",
                "summary": {"verdict": "increase", "significant": true, "test": "welch_absolute",
                            "p_value": 0.00617, "scale": "relative", "lift": 0.4934,
                            "ci": {"lower": 0.1408, "upper": 0.8460},
                            "absolute": {"lift": 0.0829, "ci": {"lower": 0.035, "upper": 0.131},
                                         "ci_method": "welch"},
                            "relative": {"lift": 0.4934, "ci": {"lower": 0.1408, "upper": 0.8460},
                                         "ci_method": "log_delta"},
                            "chance_to_win": 0.99699, "chance_to_win_method": "beta_posterior",
                            "notes": []}}],
            "health": {"srm": {"status": "ok", "p_value": 0.2542}},
            "cuped": {"applied": true, "pre_exposure_days": 14.0, "theta": 0.9312,
                      "variance_reduction": [0.812, 0.795]},
            "warnings": []
        })
    }

    #[test]
    fn a_table_a_person_can_read() {
        let out = render_results(&answer());
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0]
                .starts_with("new_checkout_experiment · metric purchase (binomial) · production"),
            "{out}"
        );
        assert!(lines[1].contains("1,000 units exposed"), "{out}");
        assert!(out.contains("VARIANT"), "{out}");
        let control = lines
            .iter()
            .find(|l| l.starts_with("control (control)"))
            .copied();
        let treatment = lines.iter().find(|l| l.starts_with("treatment")).copied();
        let (Some(control), Some(treatment)) = (control, treatment) else {
            panic!("no variant rows in:\n{out}");
        };
        assert!(
            control.contains("482") && control.contains("16.80% (13.74% … 20.38%)"),
            "{control}"
        );
        assert!(
            treatment.contains("+49.3% (+14.1% … +84.6%) *"),
            "{treatment}"
        );
        assert!(
            treatment.contains("0.0062") && treatment.contains("99.7%"),
            "{treatment}"
        );
        assert!(
            treatment.contains("+8.3 (+3.5 … +13.1)") && treatment.contains("increase"),
            "the absolute lift and the verdict: {treatment}"
        );
        assert!(
            out.contains("Verdicts follow the Welch t-test of the absolute difference"),
            "{out}"
        );
        assert!(out.contains("* significant: p-value below 0.05"), "{out}");
        assert!(
            out.contains(
                "CUPED over the 14 days before exposure: θ = 0.9312, variance reduced by 81%, 80%"
            ),
            "{out}"
        );
        assert!(out.contains("Sample ratio: ok (p = 0.2542)"), "{out}");
        assert!(out.contains("No warnings."), "{out}");
    }

    #[test]
    fn warnings_and_unavailable_results_are_shown() {
        let mut a = answer();
        a["method"] = json!("sequential");
        a["comparisons"][0]["summary"] = json!({"verdict": "unavailable", "lift": null,
            "ci": null, "p_value": null, "chance_to_win": null, "significant": false,
            "absolute": null, "relative": null, "test": "confidence_sequence_absolute",
            "notes": ["No test: a two-sample test needs at least 2 units, got 0."]});
        a["health"]["srm"] = json!({"status": "mismatch", "p_value": 0.00002});
        a["verdict_withheld"] = json!(
            "No verdict: sample-ratio mismatch (p = 2.00e-5): check that every variant logs its exposures"
        );
        a["warnings"] = json!(["Sample-ratio mismatch: units per variant [1000, 1200] differ"]);
        let out = render_results(&a);
        assert!(
            out.contains("CONF. SEQUENCE") && out.contains("ALWAYS VALID"),
            "{out}"
        );
        assert!(
            out.contains("Note, treatment: No test: a two-sample test needs"),
            "{out}"
        );
        assert!(
            out.contains("VERDICT WITHHELD. No verdict: sample-ratio mismatch"),
            "{out}"
        );
        assert!(
            out.contains("Sample ratio: MISMATCH (p = <0.0001)"),
            "{out}"
        );
        assert!(out.contains("  ! Sample-ratio mismatch"), "{out}");
    }

    #[test]
    fn missing_fields_do_not_panic() {
        let out = render_results(&json!({}));
        assert!(out.contains("VARIANT"), "{out}");
        let out = render_results(&json!({"variants": [{"key": "a"}], "comparisons": "x"}));
        assert!(out.contains("a (control)"), "{out}");
    }

    #[test]
    fn numbers() {
        assert_eq!(count(&json!(1_234_567)), "1,234,567");
        assert_eq!(count(&json!(999)), "999");
        assert_eq!(p_value(0.00001), "<0.0001");
        assert_eq!(trim_number(95.0, 1), "95");
        assert_eq!(signed_percent(-0.0512), "-5.1%");
    }
}
