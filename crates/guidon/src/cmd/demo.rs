//! `guidon demo`: the seed's checkout experiment, end to end, on a
//! throwaway database: a real server in this process on 127.0.0.1:0, the
//! 50/50 `new_checkout_experiment` flag, 1,000 users `user_0`..`user_999`
//! assigned by the engine exactly as an SDK would, their exposures and
//! purchases sent through `POST /api/v1/events`, and the results
//! endpoint's statistics, all through the admin client.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use guidon_client::admin::{AdminClient, Body, ResultsQuery};
use guidon_engine::model::Flag;
use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
use serde_json::{Value, json};

use crate::output::{Table, count, emit};
use crate::remote::explain;

/// The seed's experiment: `testdata/hashing/` holds its 1,000 assignments.
const FLAG: &str = "new_checkout_experiment";
const ENV: &str = "production";
const USERS: usize = 1000;
const PRICE: f64 = 99.99;
/// The arms, control first, as the seed names them.
const VARIANTS: [&str; 2] = ["control", "treatment"];

fn flag() -> anyhow::Result<Flag> {
    serde_json::from_value(json!({
        "key": FLAG, "description": "Single-page checkout", "enabled": true,
        "variants": [
            {"key": VARIANTS[0], "weight": 50, "enabled": false, "value": {"layout": "classic"}},
            {"key": VARIANTS[1], "weight": 50, "enabled": true, "value": {"layout": "single_page"}}
        ],
        "off_variant": VARIANTS[0]
    }))
    .context("the demo's flag")
}

/// The seed's purchases: treatment buys when i % 4 == 0, control when i % 6 == 0.
fn buys(treatment: bool, i: usize) -> bool {
    if treatment {
        i.is_multiple_of(4)
    } else {
        i.is_multiple_of(6)
    }
}

pub(crate) fn run() -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(demo())?;
    Ok(ExitCode::SUCCESS)
}

async fn demo() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "guidon-demo-{}-{}",
        std::process::id(),
        Timestamp::now().as_millisecond()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &std::path::Path) -> anyhow::Result<()> {
    let admin = guidon_server::generate_secret().context("generating a token")?;
    let running = guidon_server::start(guidon_server::Config {
        listen: "127.0.0.1:0".into(),
        database_url: format!("sqlite://{}", dir.join("demo.db").display()),
        admin_token: Some(admin.clone()),
        heartbeat: Duration::from_secs(15),
        ..guidon_server::Config::default()
    })
    .await
    .context("starting a server on a throwaway database")?;
    let client = AdminClient::new(&running.addr.to_string(), &admin).map_err(explain)?;
    let flag = flag()?;
    client
        .set_flag(ENV, FLAG, Body::json(&flag).map_err(explain)?, None)
        .await
        .map_err(explain)
        .with_context(|| format!("creating {FLAG}"))?;

    // Assignment as an SDK does it: the engine, over the same definition.
    let snapshot = Snapshot::compile(&FlagFile {
        flags: vec![flag],
        segments: Vec::new(),
    })?;
    let start = Timestamp::now();
    let later = start + jiff::SignedDuration::from_secs(60);
    let mut events = Vec::new();
    let mut exposures = [0_u32; 2];
    let mut purchases = [0_u32; 2];
    for i in 0..USERS {
        let user = format!("user_{i}");
        let ctx = Context::new().with("user_id", user.clone());
        let variant = snapshot
            .evaluate(FLAG, &ctx, start)
            .variant
            .unwrap_or(VARIANTS[0])
            .to_owned();
        let arm = usize::from(variant == VARIANTS[1]);
        exposures[arm] += 1;
        events.push(json!({
            "type": "exposure", "event_id": format!("exposure-{i}"), "flag": FLAG,
            "variant": variant, "context": {"user_id": user}, "timestamp": start.to_string(),
        }));
        if buys(arm == 1, i) {
            purchases[arm] += 1;
            events.push(json!({
                "type": "conversion", "event_id": format!("purchase-{i}"), "metric": "purchase",
                "value": PRICE, "context": {"user_id": user}, "timestamp": later.to_string(),
            }));
        }
    }
    let receipt = client
        .send_events(ENV, &events)
        .await
        .map_err(explain)
        .context("sending the events")?;
    if let Some(refused) = receipt.rejected.first() {
        bail!(
            "sending the events: {} refused, the first ({}): {}",
            receipt.rejected.len(),
            refused.error,
            refused.message
        );
    }

    let mut out = format!("Experiment: {FLAG} (the seed's checkout experiment, {USERS} users)\n\n");
    let mut table = Table::new(&["VARIANT", "EXPOSURES", "PURCHASES", "RATE"]).right(&[1, 2, 3]);
    for (arm, name) in VARIANTS.iter().enumerate() {
        let rate = f64::from(purchases[arm]) / f64::from(exposures[arm].max(1));
        table.row(vec![
            (*name).to_owned(),
            exposures[arm].to_string(),
            purchases[arm].to_string(),
            format!("{:.2}%", rate * 100.0),
        ]);
    }
    out.push_str(&table.render());
    out.push_str(&format!(
        "\n{} accepted by POST /api/v1/events; the server's analysis:\n\n",
        count(receipt.accepted as usize, "event", "events")
    ));
    let results: Value = client
        .experiment_results(ENV, FLAG, &ResultsQuery::metric("purchase"))
        .await
        .map_err(explain)
        .context("reading the results")?;
    out.push_str(&super::experiments::render_results(&results));
    emit(&out)?;
    running.shutdown().await?;
    Ok(())
}
