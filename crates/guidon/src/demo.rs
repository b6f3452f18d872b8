//! `guidon demo`: the seed's checkout experiment, end to end, on a
//! throwaway database: a real server in this process on 127.0.0.1:0, the
//! 50/50 `new_checkout` flag, 1,000 users `user_0`..`user_999` assigned by
//! the engine exactly as an SDK would, their exposures and purchases sent
//! through `POST /api/v1/events`, and the results endpoint's statistics.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
use serde_json::{Value, json};

const FLAG: &str = "new_checkout";
const USERS: usize = 1000;
const PRICE: f64 = 99.99;

fn flag() -> Value {
    json!({
        "key": FLAG, "description": "Single-page checkout", "enabled": true,
        "variants": [
            {"key": "control", "weight": 50, "enabled": false, "value": {"layout": "classic"}},
            {"key": "treatment", "weight": 50, "enabled": true, "value": {"layout": "single_page"}}
        ],
        "off_variant": "control"
    })
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
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let env = "production";

    let response = http
        .put(format!("{base}/api/v1/envs/{env}/flags/{FLAG}"))
        .bearer_auth(&admin)
        .json(&flag())
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("creating {FLAG}: {}", response.text().await?);
    }

    // Assignment as an SDK does it: the engine, over the same definition.
    let file = FlagFile::from_json_value(json!({"flags": [flag()]}))?;
    let snapshot = Snapshot::compile(&file)?;
    let start = Timestamp::now();
    let mut events = Vec::new();
    let mut exposures = [0_u32; 2];
    let mut purchases = [0_u32; 2];
    for i in 0..USERS {
        let user = format!("user_{i}");
        let ctx = Context::new().with("user_id", user.clone());
        let variant = snapshot
            .evaluate(FLAG, &ctx, start)
            .variant
            .unwrap_or("control")
            .to_owned();
        let arm = usize::from(variant == "treatment");
        exposures[arm] += 1;
        events.push(json!({
            "type": "exposure", "event_id": format!("exposure-{i}"), "flag": FLAG,
            "variant": variant, "context": {"user_id": user}, "timestamp": start.to_string(),
        }));
        // The seed's pattern: treatment buys when i % 4 == 0, control when i % 6 == 0.
        let buys = if arm == 1 { i % 4 == 0 } else { i % 6 == 0 };
        if buys {
            purchases[arm] += 1;
            let later = start + jiff::SignedDuration::from_secs(60);
            events.push(json!({
                "type": "conversion", "event_id": format!("purchase-{i}"), "metric": "purchase",
                "value": PRICE, "context": {"user_id": user}, "timestamp": later.to_string(),
            }));
        }
    }
    let response = http
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(&admin)
        .header(guidon_server::ENV_HEADER, env)
        .json(&json!({ "events": events }))
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    if status != 200 {
        bail!("sending the events: {status} {answer}");
    }

    println!("Experiment: {FLAG} (the seed's checkout experiment, {USERS} users)\n");
    println!(
        "{:<10} {:>9} {:>9} {:>8}",
        "variant", "exposures", "purchases", "rate"
    );
    for (arm, name) in ["control", "treatment"].iter().enumerate() {
        let rate = f64::from(purchases[arm]) / f64::from(exposures[arm].max(1));
        println!(
            "{name:<10} {:>9} {:>9} {:>7.2}%",
            exposures[arm],
            purchases[arm],
            rate * 100.0
        );
    }
    println!(
        "\n{} events accepted by POST /api/v1/events; the server's analysis:\n",
        answer["accepted"]
    );

    let response = http
        .get(format!(
            "{base}/api/v1/envs/{env}/experiments/{FLAG}/results"
        ))
        .query(&[("metric", "purchase")])
        .bearer_auth(&admin)
        .send()
        .await?;
    let status = response.status();
    let results: Value = response.json().await?;
    if status != 200 {
        bail!("reading the results: {status} {results}");
    }
    print!("{}", crate::experiments::render_results(&results));
    running.shutdown().await?;
    Ok(())
}
