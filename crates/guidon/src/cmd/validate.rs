//! `guidon validate --file FLAGS`: a one-line summary, or every problem
//! with its path.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use guidon_engine::{FlagFile, Snapshot};

use crate::input::Input;
use crate::output::{count, emit};

#[derive(clap::Args)]
pub(crate) struct ValidateArgs {
    /// The flag file (JSON, or YAML when it ends in .yaml/.yml; `-` reads JSON from stdin).
    #[arg(long, short)]
    file: PathBuf,
}

pub(crate) fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let path = &args.file;
    let file = read_flag_file(path)?;
    match Snapshot::compile(&file) {
        Ok(snapshot) => {
            emit(&format!(
                "{}: valid, {} and {}\n",
                path.display(),
                count(snapshot.len(), "flag", "flags"),
                count(file.segments.len(), "segment", "segments"),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            let n = err.problems.len();
            eprintln!("{}: {}", path.display(), count(n, "problem", "problems"));
            for p in &err.problems {
                eprintln!("{p}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A flag file, compiled; invalid flags are one error listing every problem.
pub(crate) fn load_snapshot(path: &Path) -> anyhow::Result<Snapshot> {
    let file = read_flag_file(path)?;
    Snapshot::compile(&file).map_err(|err| {
        let lines: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        anyhow!(
            "{} is not a valid flag file ({}): {}",
            path.display(),
            count(lines.len(), "problem", "problems"),
            lines.join("; ")
        )
    })
}

fn read_flag_file(path: &Path) -> anyhow::Result<FlagFile> {
    let input = Input::read(path)?;
    FlagFile::parse(&input.text, input.format)
        .with_context(|| format!("{} is not a valid flag file", path.display()))
}
