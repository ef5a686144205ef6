//! The launch: load the variables, then replace this process with the command, or with
//! --init or --watch, start it as a child and supervise it.

use crate::cli::Cli;
use crate::config::Config;
use crate::error::Error;
use crate::exec::{self, ChildEnvironment};
use crate::hardening;
use crate::load;
use crate::supervise;
use secrecy::SecretString;
use std::convert::Infallible;
use std::ffi::OsString;

pub fn run(cli: Cli, inherited: Vec<(OsString, OsString)>) -> Result<Infallible, Error> {
    let core_limit = hardening::protect_process();
    let config = Config::from_args(cli.selection, |name| std::env::var(name).ok())?;
    if cli.command.is_empty() {
        return Err(Error::Usage(
            "no command given: put it after '--', for example: qlarius-env -- mix phx.server".into(),
        ));
    }

    if cli.supervise.init || cli.supervise.watch.is_some() {
        let code = supervise::run(cli.command, cli.supervise, config, inherited, core_limit)?;
        std::process::exit(i32::from(code));
    }

    let report = block_on(load::load_variables(&config))?;

    let pairs: Vec<(&str, &SecretString)> = report
        .variables
        .iter()
        .map(|v| (v.name.as_str(), &v.value))
        .collect();
    let (environment, existing) = ChildEnvironment::build(&inherited, &pairs, !config.no_overwrite)?;
    if !existing.is_empty() && config.no_overwrite {
        tracing::info!(
            "keeping {} already set in the environment (--no-overwrite)",
            existing.join(", ")
        );
    } else if !existing.is_empty() {
        tracing::warn!(
            "replacing {} already set in the environment with the Parameter Store value",
            existing.join(", ")
        );
    }

    let search_path = inherited
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_os_str());
    tracing::debug!(command = ?redacted(&cli.command, &report.variables), "executing");
    core_limit.restore();
    Err(exec::exec(&cli.command, &environment, search_path))
}

/// Returns the command line for the log, with any loaded value that was also passed as
/// an argument replaced.
fn redacted(command: &[OsString], variables: &[load::Variable]) -> Vec<String> {
    command
        .iter()
        .map(|arg| crate::error::redact(&arg.to_string_lossy(), variables.iter().map(|v| &v.value)))
        .collect()
}

/// Runs a future on a single-threaded runtime: one launch makes a handful of requests,
/// and a second thread would only add start-up time.
pub fn block_on<T>(future: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(future);
    // A DNS lookup may still be running on a blocking thread; it must not delay exec.
    runtime.shutdown_background();
    result
}
