//! The operator commands: check, put, keygen, policy, completions and man. One file each;
//! this module dispatches to them and contains what several of them share.

pub mod check;
pub mod completions;
mod identity;
pub mod keygen;
pub mod policy;
pub mod put;

use crate::cli::{Command, SelectionArgs};
use crate::error::Error;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory};
use std::time::Duration;

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

/// How to reach AWS, for commands that call AWS but select no parameters.
#[derive(Debug, Args)]
pub struct AwsArgs {
    /// AWS region [env: AWS_REGION, then AWS_DEFAULT_REGION, then the profile's region].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Parameter Store endpoint URL, for example a local emulator
    /// [env: AWS_ENDPOINT_URL_SSM, then AWS_ENDPOINT_URL].
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// AWS profile from the shared config files [env: AWS_PROFILE].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Maximum time to wait for credentials and the request, retries included.
    #[arg(
        long,
        value_name = "DURATION",
        env = "QLARIUS_ENV_TIMEOUT",
        default_value = "30s",
        value_parser = crate::cli::parse_duration
    )]
    pub timeout: Duration,
}

impl AwsArgs {
    /// Returns the selection options of a launch with only the AWS settings filled in, so
    /// that the same validation and precedence apply.
    pub fn into_selection(self) -> SelectionArgs {
        SelectionArgs {
            region: self.region,
            endpoint_url: self.endpoint_url,
            profile: self.profile,
            timeout: self.timeout,
            ..SelectionArgs::default()
        }
    }
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
