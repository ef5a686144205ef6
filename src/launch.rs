//! The launch: load the variables, then replace this process with the command, or with
//! --init or --watch, start it as a child and supervise it.

use crate::cli::Cli;
use crate::config::Config;
use crate::error::Error;
use crate::exec;
use crate::hardening;
use crate::load;
use crate::supervise;
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

    let environment = exec::environment_for(&inherited, &report.variables, !config.no_overwrite)?;

    let search_path = inherited
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_os_str());
    tracing::debug!(command = ?exec::loggable_command(&cli.command, &report.variables), "executing");
    core_limit.restore();
    Err(exec::exec(&cli.command, &environment, search_path))
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
