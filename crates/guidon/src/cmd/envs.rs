//! `guidon envs …`: list, create and delete a server's environments.

use std::process::ExitCode;

use clap::Subcommand;
use guidon_client::admin::AdminClient;
use serde_json::json;

use crate::output::{Table, answer, clean, quoted};
use crate::remote::{RemoteArgs, block_on, explain};

#[derive(clap::Args)]
pub(crate) struct EnvsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: EnvsCommand,
}

#[derive(Subcommand)]
pub(crate) enum EnvsCommand {
    /// List the environments with their revisions.
    List,
    /// Create an environment.
    Create {
        /// Its name.
        name: String,
    },
    /// Delete an environment (with --json, prints {"deleted": NAME}).
    Delete {
        /// Its name.
        name: String,
        /// Delete it even if it still holds flags or segments.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(args: EnvsArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let as_json = args.remote.json;
    block_on(async move {
        match args.command {
            EnvsCommand::List => list(&client, as_json).await,
            EnvsCommand::Create { name } => create(&client, &name, as_json).await,
            EnvsCommand::Delete { name, force } => delete(&client, &name, force, as_json).await,
        }
    })
}

async fn list(client: &AdminClient, as_json: bool) -> anyhow::Result<()> {
    let envs = client.environments().await.map_err(explain)?;
    answer(as_json, &envs, |envs| {
        if envs.environments.is_empty() {
            return "no environments (create one with `guidon envs create NAME`)\n".to_owned();
        }
        let mut table = Table::new(&["NAME", "REVISION"]);
        for e in &envs.environments {
            table.row(vec![clean(&e.name), e.revision.to_string()]);
        }
        table.render()
    })
}

async fn create(client: &AdminClient, name: &str, as_json: bool) -> anyhow::Result<()> {
    let created = client.create_environment(name).await.map_err(explain)?;
    answer(as_json, &created, |_| {
        format!("created environment {}\n", quoted(name))
    })
}

async fn delete(
    client: &AdminClient,
    name: &str,
    force: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    client
        .delete_environment(name, force)
        .await
        .map_err(explain)?;
    // The server answers 204 with nothing: say what was done, as JSON.
    answer(as_json, &json!({ "deleted": name }), |_| {
        format!("deleted environment {}\n", quoted(name))
    })
}
