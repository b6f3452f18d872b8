//! `guidon users …`: the people who sign in to the console, their roles
//! per environment and their passwords.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use guidon_client::admin::{AdminClient, UserRole, UserRoles};
use serde_json::json;

use crate::output::{Table, answer, clean, date_ms, quoted, shorten};
use crate::remote::{RemoteArgs, block_on, explain};

/// Where a password is read from when `--password-stdin` is not given.
const PASSWORD_ENV: &str = "GUIDON_USER_PASSWORD";

#[derive(clap::Args)]
pub(crate) struct UsersArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Subcommand)]
pub(crate) enum UsersCommand {
    /// Add a person. The password comes from --password-stdin or
    /// GUIDON_USER_PASSWORD (never the command line, which others can see).
    Add {
        /// Their user name.
        name: String,
        /// ENV=ROLE, repeatable: viewer, editor or admin in ENV (`*`: every
        /// environment; admin of `*` also manages people, tokens and environments).
        #[arg(long = "role", value_name = "ENV=ROLE")]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the people and their roles.
    List,
    /// Change roles: ENV=ROLE (viewer, editor, admin) or ENV=none to take
    /// the role in ENV away; other environments keep theirs.
    SetRole {
        name: String,
        #[arg(value_name = "ENV=ROLE", required = true)]
        changes: Vec<String>,
    },
    /// Set a person's password (from --password-stdin or
    /// GUIDON_USER_PASSWORD); their sessions end.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a person (not the last admin of `*`).
    Remove { name: String },
}

pub(crate) fn run(args: UsersArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let as_json = args.remote.json;
    block_on(async move {
        match args.command {
            UsersCommand::Add {
                name,
                roles,
                password_stdin,
            } => {
                let mut parsed = UserRoles::new();
                for change in &roles {
                    let (env, role) = parse_role(change)?;
                    let role = role.ok_or_else(|| {
                        anyhow!("--role {change}: none only means something for set-role")
                    })?;
                    parsed.insert(env, role);
                }
                let password = password(password_stdin)?;
                let user = client
                    .add_user(&name, &password, &parsed)
                    .await
                    .map_err(explain)?;
                answer(as_json, &user, |user| {
                    format!("added {} ({})\n", quoted(&user.name), describe(&user.roles))
                })
            }
            UsersCommand::List => list(&client, as_json).await,
            UsersCommand::SetRole { name, changes } => {
                let mut roles = client
                    .users()
                    .await
                    .map_err(explain)?
                    .users
                    .into_iter()
                    .find(|u| u.name == name)
                    .ok_or_else(|| anyhow!("no person named {}", quoted(&name)))?
                    .roles;
                for change in &changes {
                    match parse_role(change)? {
                        (env, Some(role)) => roles.insert(env, role),
                        (env, None) => roles.remove(&env),
                    };
                }
                let user = client
                    .set_user_roles(&name, &roles)
                    .await
                    .map_err(explain)?;
                answer(as_json, &user, |user| {
                    format!("{}: {}\n", quoted(&user.name), describe(&user.roles))
                })
            }
            UsersCommand::ResetPassword {
                name,
                password_stdin,
            } => {
                let password = password(password_stdin)?;
                client
                    .set_user_password(&name, &password)
                    .await
                    .map_err(explain)?;
                answer(as_json, &json!({ "password_set": name }), |_| {
                    format!("password of {} set; their sessions ended\n", quoted(&name))
                })
            }
            UsersCommand::Remove { name } => {
                client.remove_user(&name).await.map_err(explain)?;
                answer(as_json, &json!({ "removed": name }), |_| {
                    format!("removed {}\n", quoted(&name))
                })
            }
        }
    })
}

/// `ENV=ROLE`; `None` for `ENV=none`.
fn parse_role(text: &str) -> anyhow::Result<(String, Option<UserRole>)> {
    let Some((env, role)) = text.split_once('=') else {
        bail!(
            "{}: expected ENV=ROLE (for example production=viewer)",
            quoted(text)
        );
    };
    if env.is_empty() {
        bail!(
            "{}: the environment is empty (`*` means every one)",
            quoted(text)
        );
    }
    if role == "none" {
        return Ok((env.to_owned(), None));
    }
    let role = UserRole::parse(role).ok_or_else(|| {
        anyhow!(
            "{}: unknown role {} (viewer, editor, admin or none)",
            quoted(text),
            quoted(role)
        )
    })?;
    Ok((env.to_owned(), Some(role)))
}

fn password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            bail!("--password-stdin: standard input has no password");
        }
        return Ok(line);
    }
    match std::env::var(PASSWORD_ENV) {
        Ok(password) if !password.is_empty() => Ok(password),
        _ => bail!("give the password with --password-stdin or {PASSWORD_ENV}"),
    }
}

fn describe(roles: &UserRoles) -> String {
    if roles.is_empty() {
        return "no role".to_owned();
    }
    roles
        .iter()
        .map(|(env, role)| format!("{}={}", clean(env), role.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn list(client: &AdminClient, as_json: bool) -> anyhow::Result<()> {
    let users = client.users().await.map_err(explain)?;
    answer(as_json, &users, |users| {
        if users.users.is_empty() {
            return "no people\n".to_owned();
        }
        let mut table = Table::new(&["NAME", "ROLES", "CREATED", "LAST SIGN-IN"]);
        for u in &users.users {
            table.row(vec![
                shorten(&u.name, 40),
                describe(&u.roles),
                date_ms(u.created_at_ms),
                u.last_login_at_ms.map_or_else(|| "-".to_owned(), date_ms),
            ]);
        }
        table.render()
    })
}
