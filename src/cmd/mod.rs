//! The operator commands: check, put, keygen, policy, completions and man. One file each;
//! this module dispatches to them and contains what several of them share.

pub mod check;
pub mod completions;
mod identity;
pub mod keygen;
pub mod policy;
pub mod put;

use crate::cli::Command;
use crate::error::Error;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

/// Runs one operator command. `matches` is the whole command line, used to reject launch
/// options given before the subcommand's name.
pub fn run(command: Command, matches: &ArgMatches) -> Result<(), Error> {
    ensure_no_launch_options(matches)?;
    match command {
        Command::Check(args) => check::run(args),
        Command::Put(args) => put::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Completions(args) => completions::run_completions(args),
        Command::Man(args) => completions::run_man(args),
    }
}

/// Rejects `qlarius-env --path /x check`: the top-level options belong to a launch, so
/// the subcommand would silently run with its own defaults instead.
fn ensure_no_launch_options(matches: &ArgMatches) -> Result<(), Error> {
    let Some((name, _)) = matches.subcommand() else {
        return Ok(());
    };
    let command = crate::cli::Cli::command();
    for arg in command.get_arguments() {
        if arg.is_global_set() {
            continue;
        }
        let id = arg.get_id().as_str();
        if matches.value_source(id) == Some(ValueSource::CommandLine) {
            let flag = arg
                .get_long()
                .map(|long| format!("--{long}"))
                .unwrap_or_else(|| id.to_string());
            return Err(Error::Usage(format!(
                "{flag} comes before '{name}', where it would apply to a launch: \
                 put options after the subcommand, for example: qlarius-env {name} {flag} ..."
            )));
        }
    }
    Ok(())
}

/// Writes `text` to standard output. A closed pipe (`qlarius-env policy | head`) is not an
/// error: the reader has what it wanted.
pub fn write_stdout(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Internal(format!("cannot write to standard output: {e}")))
        }
        _ => Ok(()),
    }
}

/// Returns the environment variable `name`, for `Config::from_args`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
