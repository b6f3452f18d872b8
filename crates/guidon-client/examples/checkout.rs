//! The seed's checkout experiment, against a live `guidon serve`: 1,000
//! users get `new_checkout`'s variant from the SDK (evaluated locally, one
//! exposure each sent in the background), buy with the seed's pattern
//! (treatment: every 4th user, control: every 6th, 99.99 each), and the
//! purchases are tracked as conversions.
//!
//! ```sh
//! GUIDON_ADMIN_TOKEN=secret cargo run --release -- serve &
//! GUIDON_TOKEN=secret cargo run -p guidon-client --example checkout
//! ```
//!
//! `GUIDON_URL` (default `http://127.0.0.1:8080`), `GUIDON_TOKEN` (an sdk
//! token, or an admin token: it then creates the flag when missing and
//! prints the server's results), `GUIDON_ENV` (default `production`, for
//! admin tokens).

use std::time::Duration;

use guidon_client::{Client, Context, Status};
use serde_json::{Value, json};

const FLAG: &str = "new_checkout";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("GUIDON_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let token =
        std::env::var("GUIDON_TOKEN").map_err(|_| "set GUIDON_TOKEN (sdk or admin token)")?;
    let env = std::env::var("GUIDON_ENV").unwrap_or_else(|_| "production".into());
    let http = reqwest::Client::new();

    // With an admin token: create the experiment when it does not exist.
    let created = http
        .put(format!("{url}/api/v1/envs/{env}/flags/{FLAG}"))
        .bearer_auth(&token)
        .header("If-None-Match", "*")
        .json(&json!({
            "key": FLAG, "description": "Single-page checkout", "enabled": true,
            "variants": [
                {"key": "control", "weight": 50, "enabled": false, "value": {"layout": "classic"}},
                {"key": "treatment", "weight": 50, "enabled": true, "value": {"layout": "single_page"}}
            ],
            "off_variant": "control"
        }))
        .send()
        .await?;
    match created.status().as_u16() {
        200 | 201 => println!("created flag {FLAG} (50/50 control/treatment)"),
        412 => println!("flag {FLAG} exists; using it as it is"),
        403 => println!("(an sdk token cannot create flags: {FLAG} must exist)"),
        other => println!("creating {FLAG}: {other} {}", created.text().await?),
    }

    let client = Client::builder(&url, &token)
        .environment(&env)
        .start_timeout(Duration::from_secs(5))
        .build()
        .await?;
    if client.status() != Status::Ready {
        return Err(format!("no flags from {url}: {:?}", client.status()).into());
    }
    println!("SDK ready at revision {:?}", client.revision());

    let mut exposures = [0_u32; 2];
    let mut purchases = [0_u32; 2];
    for i in 0..1000 {
        let user = Context::new().with("user_id", format!("user_{i}"));
        let arm = match client.variant(FLAG, &user).as_deref() {
            Some("treatment") => 1,
            _ => 0,
        };
        exposures[arm] += 1;
        let buys = if arm == 1 { i % 4 == 0 } else { i % 6 == 0 };
        if buys {
            purchases[arm] += 1;
            client.track("purchase", &user, Some(99.99));
        }
    }
    println!("\nExperiment: {FLAG}");
    for (arm, name) in ["control", "treatment"].iter().enumerate() {
        let rate = f64::from(purchases[arm]) / f64::from(exposures[arm].max(1)) * 100.0;
        println!(
            "  {name:<10} exposures {:>4}  purchases {:>4}  conversion {rate:.2}%",
            exposures[arm], purchases[arm]
        );
    }
    // Send what is queued before exiting.
    client.close().await?;
    let stats = client.event_stats();
    println!(
        "\nevents: {} sent, {} rejected, {} dropped, {} exposures deduplicated",
        stats.sent, stats.rejected, stats.dropped, stats.deduplicated
    );

    // With an admin token: the server's analysis.
    let results = http
        .get(format!(
            "{url}/api/v1/envs/{env}/experiments/{FLAG}/results?metric=purchase"
        ))
        .bearer_auth(&token)
        .send()
        .await?;
    if results.status().is_success() {
        let results: Value = results.json().await?;
        println!(
            "\nserver results ({} exposed units):",
            results["exposures"]["units"]
        );
        if let Some(comparisons) = results["comparisons"].as_array() {
            for c in comparisons {
                let s = &c["summary"];
                let pct = |v: &Value| {
                    v.as_f64()
                        .map_or("-".into(), |x| format!("{:+.1}%", x * 100.0))
                };
                println!(
                    "  {} vs control: relative lift {}  95% CI [{}, {}]  p-value {}  chance to win {}",
                    c["variant"].as_str().unwrap_or("?"),
                    pct(&s["lift"]),
                    pct(&s["ci"][0]),
                    pct(&s["ci"][1]),
                    s["p_value"]
                        .as_f64()
                        .map_or("-".into(), |p| format!("{p:.4}")),
                    s["chance_to_win"]
                        .as_f64()
                        .map_or("-".into(), |p| format!("{:.1}%", p * 100.0)),
                );
            }
        }
        if let Some(warnings) = results["warnings"].as_array().filter(|w| !w.is_empty()) {
            println!("  warnings: {}", Value::Array(warnings.clone()));
        }
    }
    Ok(())
}
