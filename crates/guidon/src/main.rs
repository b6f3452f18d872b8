//! The `guidon` command: wiring only. This file parses the command line and
//! hands each command to its module in `cmd`; every decision is the
//! engine's, and the commands that talk to a server do it through
//! `guidon_client::admin`. What they print goes through `output`.

mod cmd;
mod input;
mod output;
mod remote;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::{
    demo, edge, envs, eval, experiments, flags, metrics, release, schedule, serve, token, users,
    validate,
};

#[derive(Parser)]
#[command(
    name = "guidon",
    version,
    about = "Guidon: feature flags and experiments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a flag file; print a one-line summary, or every problem with its path.
    Validate(validate::ValidateArgs),
    /// Evaluate one flag of a flag file for one or many contexts; one JSON result per line.
    Eval(eval::EvalArgs),
    /// Run the server: admin API, evaluation API (OFREP), live streams, metrics.
    Serve(serve::ServeArgs),
    /// Relay an upstream Guidon: serve its environments (OFREP, evaluate, SDK streams) nearby,
    /// through its outages, and forward events to it.
    Edge(edge::EdgeArgs),
    /// Experiments on a server: create, list, stop, and results (every metric; lift, p-value, chance to win, verdict, warnings).
    Experiments(experiments::ExperimentsArgs),
    /// The metric catalogue of an environment on a server: list, get, set, delete.
    Metrics(metrics::MetricsArgs),
    /// Changes to a flag applied later by the server, at a time in a time zone: add, list, cancel.
    Schedule(schedule::ScheduleArgs),
    /// Guarded rollouts of a flag on a server: start, status, pause, resume, skip, abort.
    Release(release::ReleaseArgs),
    /// The seed's checkout experiment end to end on a throwaway database: 1,000 users, their
    /// purchases sent as events, and the statistics. No server to set up.
    Demo,
    /// Read and change the flags of an environment on a server.
    Flags(flags::FlagsArgs),
    /// List, create and delete a server's environments.
    Envs(envs::EnvsArgs),
    /// Create, list and revoke a server's API tokens.
    Token(token::TokenArgs),
    /// Add, list and remove the people who sign in to the console; set their roles and passwords.
    Users(users::UsersArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Edge(args) => edge::run(args),
        Command::Experiments(args) => experiments::run(args),
        Command::Metrics(args) => metrics::run(args),
        Command::Schedule(args) => schedule::run(args),
        Command::Release(args) => release::run(args),
        Command::Demo => demo::run(),
        Command::Flags(args) => flags::run(args),
        Command::Envs(args) => envs::run(args),
        Command::Token(args) => token::run(args),
        Command::Users(args) => users::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("guidon: {}", output::clean(&one_line(&e)));
            ExitCode::FAILURE
        }
    }
}

/// The chain of causes as one line, outermost first, leaving out a cause
/// whose text the line holds already (many errors repeat their source's
/// message in their own).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
