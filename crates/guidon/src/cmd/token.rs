//! `guidon token …`: create, list and revoke a server's API tokens.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Subcommand;
use guidon_client::admin::AdminClient;
use guidon_client::admin::Role;
use serde_json::json;

use crate::output::{Table, answer, clean, date_ms, quoted, shorten};
use crate::remote::{RemoteArgs, block_on, explain};

#[derive(clap::Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print its secret (shown once).
    Create {
        /// A name for it (who or what uses it).
        name: String,
        /// admin: everything; sdk: read and evaluate one environment;
        /// client: evaluate one environment, never read its rules (for
        /// browsers and apps); metrics: /metrics only (for Prometheus).
        #[arg(long, value_parser = ["admin", "sdk", "client", "metrics"])]
        role: String,
        /// The environment of an sdk or client token.
        #[arg(long)]
        env: Option<String>,
    },
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token (with --json, prints {"revoked": NAME}).
    Revoke {
        /// Its name.
        name: String,
    },
}

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let as_json = args.remote.json;
    block_on(async move {
        match args.command {
            TokenCommand::Create { name, role, env } => {
                let role = Role::parse(&role).ok_or_else(|| anyhow!("unknown role {role:?}"))?;
                create(&client, &name, role, env.as_deref(), as_json).await
            }
            TokenCommand::List => list(&client, as_json).await,
            TokenCommand::Revoke { name } => revoke(&client, &name, as_json).await,
        }
    })
}

async fn create(
    client: &AdminClient,
    name: &str,
    role: Role,
    env: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let created = client
        .create_token(name, role, env)
        .await
        .map_err(explain)?;
    answer(as_json, &created, |created| {
        let scope = match &created.env {
            Some(env) => format!(" for environment {}", quoted(env)),
            None => String::new(),
        };
        format!(
            "created {} token {}{scope}; its secret, shown only this once:\n{}\n",
            created.role.as_str(),
            quoted(name),
            clean(&created.token),
        )
    })
}

async fn list(client: &AdminClient, as_json: bool) -> anyhow::Result<()> {
    let tokens = client.tokens().await.map_err(explain)?;
    answer(as_json, &tokens, |tokens| {
        if tokens.tokens.is_empty() {
            return "no tokens\n".to_owned();
        }
        let mut table = Table::new(&["NAME", "ROLE", "ENV", "CREATED", "LAST USED", "STATUS"]);
        for t in &tokens.tokens {
            table.row(vec![
                shorten(&t.name, 40),
                t.role.as_str().to_owned(),
                t.env.as_deref().map_or_else(|| "-".to_owned(), clean),
                date_ms(t.created_at_ms),
                t.last_used_at_ms.map_or_else(|| "-".to_owned(), date_ms),
                if t.revoked { "revoked" } else { "active" }.to_owned(),
            ]);
        }
        table.render()
    })
}

async fn revoke(client: &AdminClient, name: &str, as_json: bool) -> anyhow::Result<()> {
    client.revoke_token(name).await.map_err(explain)?;
    // The server answers 204 with nothing: say what was done, as JSON.
    answer(as_json, &json!({ "revoked": name }), |_| {
        format!("revoked token {}\n", quoted(name))
    })
}
