//! qlarius-env: launch a command with its secrets from AWS Systems Manager Parameter Store.

mod aws;
mod cli;
mod config;
mod error;
mod exec;
mod hardening;
mod launch;
mod load;
mod logging;
mod mapping;
mod ssm;

use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The command inherits the environment exactly as qlarius-env received it, so take
    // the snapshot before anything below changes qlarius-env's own.
    let inherited: Vec<(OsString, OsString)> = std::env::vars_os().collect();

    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
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

    match launch::run(cli, inherited) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("{}", error::Report(&e));
            ExitCode::from(e.exit_code().code())
        }
    }
}
