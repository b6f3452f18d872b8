//! What the commands that talk to a server share: how to reach it
//! (`--server`, `--token`, `--ca-cert`, `--json`), the admin client, and its errors as
//! one line each.

use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use guidon_client::admin::{AdminClient, AdminError};

use crate::output::{clean, count, shorten};

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// How to reach the server; accepted before or after the subcommand.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RemoteArgs {
    /// The server's URL.
    #[arg(
        long,
        global = true,
        env = "GUIDON_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL"
    )]
    server: String,
    /// An API token (an admin token for anything but reading flags).
    #[arg(long, global = true, env = "GUIDON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust this CA certificate (PEM) for an https:// server, besides the
    /// system's roots: a private CA, or the server's self-signed certificate.
    #[arg(long, global = true, env = "GUIDON_CA_CERT", value_name = "PATH")]
    ca_cert: Option<std::path::PathBuf>,
    /// Print the server's JSON answer (pretty) instead of a summary.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl RemoteArgs {
    /// The admin client for `--server` with `--token`.
    pub(crate) fn client(&self) -> anyhow::Result<AdminClient> {
        // An empty GUIDON_SERVER means the default, as an empty GUIDON_TOKEN means none.
        let server = match self.server.trim() {
            "" => DEFAULT_SERVER,
            given => given,
        };
        let Some(token) = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            // Every admin endpoint needs a token: say so before asking.
            bail!(
                "no token: give --token TOKEN or set GUIDON_TOKEN (without one the server answers 401 Unauthorized)"
            );
        };
        let client = AdminClient::new(server, token).map_err(explain)?;
        match self
            .ca_cert
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            None => Ok(client),
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("--ca-cert {}: cannot read it", path.display()))?;
                client.ca_certificate_pem(&pem).map_err(|e| match e {
                    AdminError::Ca(reason) => anyhow!("--ca-cert {}: {reason}", path.display()),
                    other => explain(other),
                })
            }
        }
    }
}

/// Runs a command's requests on a runtime of their own.
pub(crate) fn block_on(
    future: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(future)?;
    Ok(ExitCode::SUCCESS)
}

/// An admin call's error as the command's one line: the server's message
/// with its status and code (every validation problem at its path), and
/// what to do about it where the command can say.
pub(crate) fn explain(error: AdminError) -> anyhow::Error {
    match error {
        AdminError::InvalidUrl { url, reason } => anyhow!("--server {url}: {reason}"),
        AdminError::Certificate { .. } => {
            anyhow!("{error} (give the server's CA with --ca-cert PATH or GUIDON_CA_CERT)")
        }
        AdminError::Connect { .. } => {
            anyhow!("{error} (is it running? set --server or GUIDON_SERVER)")
        }
        AdminError::Status {
            server,
            status,
            text,
        } => anyhow!(
            "{}",
            AdminError::Status {
                server,
                status,
                text: shorten(&text, 200),
            }
        ),
        AdminError::Refused { status, body } => {
            let code = body.error.as_str();
            if let Some(problems) = body.details.as_ref().filter(|d| !d.is_empty()) {
                let lines: Vec<String> = problems
                    .iter()
                    .map(|p| {
                        if p.path.is_empty() {
                            clean(&p.message)
                        } else {
                            format!("{}: {}", clean(&p.path), clean(&p.message))
                        }
                    })
                    .collect();
                return anyhow!(
                    "rejected ({status} {code}), {}: {}",
                    count(lines.len(), "problem", "problems"),
                    lines.join("; ")
                );
            }
            let hint = match status {
                401 => "; check --token or GUIDON_TOKEN",
                403 => "; use a token allowed to do this",
                412 => "; it was changed meanwhile: read it again and retry",
                _ => "",
            };
            anyhow!("{} ({status} {code}){hint}", clean(&body.message))
        }
        other => anyhow!(other),
    }
}
