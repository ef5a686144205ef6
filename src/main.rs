//! qlarius-env: launch a command with its secrets from AWS Systems Manager Parameter Store.

mod aws;
mod cli;
mod cmd;
mod config;
mod error;
mod exec;
mod hardening;
mod launch;
mod load;
mod logging;
mod mapping;
mod ssm;
mod supervise;
mod watch;

use clap::{CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The command inherits the environment exactly as qlarius-env received it, so take
    // the snapshot before anything below changes qlarius-env's own.
    let inherited: Vec<(OsString, OsString)> = std::env::vars_os().collect();

    let parsed = cli::Cli::command()
        .try_get_matches()
        .and_then(|matches| cli::Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (mut cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(error::ExitCode::Usage.code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };

    for name in logging::SDK_BODY_LOGGING_VARIABLES {
        // SAFETY: no other thread exists yet; the runtime is started later.
        unsafe { std::env::remove_var(name) };
    }
    let filter = std::env::var("QLARIUS_ENV_LOG").ok();
    logging::init(cli.logging.verbose, cli.logging.quiet, filter.as_deref());

    let result = match cli.subcommand.take() {
        Some(command) => cmd::run(command, &matches),
        None => launch::run(cli, inherited).map(|never| match never {}),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error::Report(&e));
            ExitCode::from(e.exit_code().code())
        }
    }
}
