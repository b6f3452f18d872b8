//! OpenFeature over Guidon: the application codes against OpenFeature's
//! API; the provider evaluates locally through the Guidon client.
//!
//! ```sh
//! # Offline, over the repository's example flags:
//! cargo run -p guidon-client --example openfeature
//! # Against a server:
//! GUIDON_URL=http://127.0.0.1:8080 GUIDON_TOKEN=… cargo run -p guidon-client --example openfeature
//! ```

use guidon_client::Client;
use guidon_client::openfeature::GuidonProvider;
use open_feature::{EvaluationContext, OpenFeature};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = match std::env::var("GUIDON_TOKEN") {
        Ok(token) => {
            let url =
                std::env::var("GUIDON_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
            let env = std::env::var("GUIDON_ENV").unwrap_or_else(|_| "production".into());
            Client::builder(&url, &token)
                .environment(env)
                .build()
                .await?
        }
        Err(_) => Client::from_file(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flags.json"),
        )?,
    };

    let mut api = OpenFeature::singleton_mut().await;
    api.set_provider(GuidonProvider::new(client.clone())).await;
    let of = api.create_client();
    drop(api);

    for (user, country, email) in [
        ("user_42", "FR", "ana@example.com"),
        ("user_7", "US", "bo@example.com"),
        ("user_1001", "CA", "cy@acme.com"),
        ("user_1002", "DE", "di@example.com"),
    ] {
        let ctx = EvaluationContext::default()
            .with_targeting_key(user)
            .with_custom_field("country", country)
            .with_custom_field("email", email);
        // A boolean flag, and a variant flag whose value is an object.
        let dark = of
            .get_bool_value("dark_mode", Some(&ctx), None)
            .await
            .unwrap_or(false);
        match of
            .get_struct_details::<open_feature::StructValue>("new_checkout", Some(&ctx), None)
            .await
        {
            Ok(checkout) => println!(
                "{user}: dark_mode={dark} new_checkout variant={:?} reason={:?} layout={:?}",
                checkout.variant,
                checkout.reason,
                checkout.value.fields.get("layout")
            ),
            Err(e) => println!(
                "{user}: dark_mode={dark} new_checkout: {:?} {:?}",
                e.code, e.message
            ),
        }
    }
    client.close().await?;
    Ok(())
}
