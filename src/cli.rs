//! The command line as the user typed it (clap types). No I/O and no checks of meaning:
//! `config.rs` turns this into a validated configuration.

use clap::builder::FalseyValueParser;
use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::time::Duration;

const AFTER_HELP: &str = "\
Naming: each parameter's name below --path, with '/', '-' and '.' turned into '_' and
letters upper-cased, becomes the variable: /qlarius/twilio/auth-token -> TWILIO_AUTH_TOKEN.

Exit codes, before the command starts (after it starts, every code is the command's):
   64  invalid command line           75  throttled, or --timeout ran out
   65  invalid name, collision, NUL   76  unparsable response from Parameter Store
   66  required parameter missing     77  access, decryption or credentials denied
   69  Parameter Store unreachable    78  region or credentials not configured
   70  internal error                126  command cannot be executed
   73  put: parameter exists         127  command not found

Examples:
   qlarius-env -- mix phx.server
   qlarius-env --path /myapp/prod --require DATABASE_URL -- ./server
   qlarius-env --path /myapp/common --path /myapp/prod --map DB=/shared/db:3 -- ./server
   AWS_ENDPOINT_URL=http://127.0.0.1:5000 qlarius-env -- env";

/// Launch a command with its secrets from AWS Systems Manager Parameter Store.
///
/// Reads every parameter under the path (decrypting SecureStrings), sets each as an
/// environment variable, and replaces itself with COMMAND, so the values exist only in
/// that process's environment. Nothing runs unless every parameter loads.
#[derive(Debug, Parser)]
#[command(
    name = "qlarius-env",
    version,
    after_help = AFTER_HELP,
    override_usage = "qlarius-env [OPTIONS] -- COMMAND [ARGS]...\n       qlarius-env SUBCOMMAND [OPTIONS]",
    subcommand_value_name = "SUBCOMMAND",
    subcommand_help_heading = "Operator commands"
)]
pub struct Cli {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub logging: LogArgs,

    /// An operator command instead of a launch. A command of the same name still launches
    /// when it follows `--`.
    #[command(subcommand)]
    pub subcommand: Option<Command>,

    #[command(flatten)]
    pub supervise: SuperviseArgs,

    /// The command to run, and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The operator commands. Their options live beside their code in `src/cmd/`.
#[derive(Debug, Subcommand)]
pub enum Command {
    Check(crate::cmd::check::CheckArgs),
    Put(crate::cmd::put::PutArgs),
    Keygen(crate::cmd::keygen::KeygenArgs),
    Policy(crate::cmd::policy::PolicyArgs),
    Completions(crate::cmd::completions::CompletionsArgs),
    Man(crate::cmd::completions::ManArgs),
}

/// Selection options: the parameters to load and how to reach Parameter Store. Every
/// mode that reads parameters shares them.
#[derive(Debug, Default, Args)]
pub struct SelectionArgs {
    #[command(flatten)]
    pub sources: SourceArgs,

    /// Variable that must be loaded, or nothing runs. Repeatable; replaces the default
    /// list [default: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_VERIFY_SERVICE_SID and
    /// CLOAK_KEY when --path is not given, none otherwise].
    #[arg(
        short,
        long = "require",
        value_name = "VAR",
        env = "QLARIUS_ENV_REQUIRE",
        value_delimiter = ','
    )]
    pub require: Vec<String>,

    /// Load the version of each parameter under the paths that carries this label.
    /// Parameters without the label are left out.
    #[arg(long, value_name = "LABEL", env = "QLARIUS_ENV_LABEL")]
    pub label: Option<String>,

    /// Keep the case of converted names (/app/TF_VAR_type -> TF_VAR_type) instead of
    /// upper-casing them.
    #[arg(long, env = "QLARIUS_ENV_PRESERVE_CASE", value_parser = FalseyValueParser::new())]
    pub preserve_case: bool,

    /// Keep variables already set in the environment instead of replacing them.
    #[arg(long, env = "QLARIUS_ENV_NO_OVERWRITE", value_parser = FalseyValueParser::new())]
    pub no_overwrite: bool,

    /// Start the command even if a path contains no parameters.
    #[arg(long, env = "QLARIUS_ENV_ALLOW_EMPTY", value_parser = FalseyValueParser::new())]
    pub allow_empty: bool,

    /// Fail when a loaded parameter is not a SecureString, instead of warning.
    #[arg(long, env = "QLARIUS_ENV_REQUIRE_SECURE", value_parser = FalseyValueParser::new())]
    pub require_secure: bool,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// Wait a random time between zero and DURATION before the first request, to spread
    /// the start of many instances launched at once (for example 5s). Not counted in
    /// --timeout.
    #[arg(long, value_name = "DURATION", env = "QLARIUS_ENV_SPLAY", value_parser = parse_duration)]
    pub splay: Option<Duration>,
}

/// The sources of variables: paths to walk and named parameters.
#[derive(Debug, Default, Args)]
pub struct SourceArgs {
    /// Parameter Store path to load, recursively [default: /qlarius]. Repeat to layer
    /// paths: a variable from a later path replaces one from an earlier path.
    #[arg(
        short,
        long = "path",
        value_name = "PATH",
        env = "QLARIUS_ENV_PATH",
        value_delimiter = ','
    )]
    pub paths: Vec<String>,

    /// Set VAR from one named parameter: VAR=NAME, VAR=NAME:VERSION or VAR=NAME:LABEL.
    /// Repeatable; wins over every path. A Secrets Manager secret is read as
    /// VAR=/aws/reference/secretsmanager/SECRET. Without --path, only the maps load.
    #[arg(
        short,
        long = "map",
        value_name = "VAR=NAME",
        env = "QLARIUS_ENV_MAP",
        value_delimiter = ','
    )]
    pub maps: Vec<String>,
}

/// How to reach AWS; shared by every command that calls it.
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

    /// Maximum time to wait for credentials and Parameter Store, retries included
    /// (for example 30s, 1m, 500ms).
    #[arg(
        long,
        value_name = "DURATION",
        env = "QLARIUS_ENV_TIMEOUT",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,
}

/// The default start-up budget, as clap's `default_value` above also states.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for AwsArgs {
    fn default() -> Self {
        AwsArgs {
            region: None,
            endpoint_url: None,
            profile: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl SelectionArgs {
    /// Returns selection options with only the AWS settings given, so that commands that
    /// select no parameters get the same validation and precedence as a launch.
    pub fn from_aws(aws: AwsArgs) -> SelectionArgs {
        SelectionArgs {
            aws,
            ..SelectionArgs::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log more: -v for details, -vv for everything qlarius-env logs. The filter can also
    /// be set with QLARIUS_ENV_LOG (for example QLARIUS_ENV_LOG=debug).
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet", global = true)]
    pub verbose: u8,

    /// Log less: -q hides the start-up line, -qq hides warnings too. Errors always print.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub quiet: u8,
}

/// Supervising instead of exec: init duties, and applying changes from Parameter Store.
#[derive(Debug, Args)]
#[command(next_help_heading = "Supervising (instead of replacing itself with the command)")]
#[command(group(ArgGroup::new("supervisor").args(["init", "watch"]).multiple(true)))]
pub struct SuperviseArgs {
    /// Start the command as a child and stay its parent, as a container init does: forward
    /// TERM, INT, HUP, QUIT, USR1, USR2, WINCH and CONT to it, reap every exited process,
    /// and exit with its status (128 + N if signal N killed it).
    #[arg(long, env = "QLARIUS_ENV_INIT", value_parser = FalseyValueParser::new())]
    pub init: bool,

    /// Poll Parameter Store for changes every INTERVAL (5m if no value is given), and
    /// apply them as --on-change says. Implies --init. Each wait is drawn at random
    /// between 80% and 120% of INTERVAL, so that a fleet does not poll in step.
    #[arg(
        long,
        value_name = "INTERVAL",
        env = "QLARIUS_ENV_WATCH",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "5m",
        value_parser = parse_duration
    )]
    pub watch: Option<Duration>,

    /// What a change does: `restart` stops the command (--stop-signal, then KILL after
    /// --stop-timeout) and starts it again with the new environment; `signal:NAME`, for
    /// example signal:HUP, only sends that signal, and the command keeps the environment
    /// it started with.
    #[arg(
        long,
        value_name = "ACTION",
        env = "QLARIUS_ENV_ON_CHANGE",
        default_value = "restart",
        value_parser = parse_on_change,
        requires = "watch"
    )]
    pub on_change: OnChange,

    /// Signal that asks the command to stop before a restart (TERM, SIGTERM or 15).
    #[arg(
        long,
        value_name = "SIGNAL",
        env = "QLARIUS_ENV_STOP_SIGNAL",
        default_value = "TERM",
        value_parser = parse_signal,
        requires = "watch"
    )]
    pub stop_signal: Signal,

    /// Time the command has to exit after the stop signal before it is killed with KILL.
    #[arg(
        long,
        value_name = "DURATION",
        env = "QLARIUS_ENV_STOP_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration,
        requires = "watch"
    )]
    pub stop_timeout: Duration,

    /// Start the command in its own process group and send forwarded signals to the
    /// whole group, so that its children get them too.
    #[arg(long, env = "QLARIUS_ENV_PROCESS_GROUP", value_parser = FalseyValueParser::new(), requires = "supervisor")]
    pub process_group: bool,
}

/// What a change in Parameter Store does to the running command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnChange {
    Restart,
    Signal(Signal),
}

/// Parses a signal name with or without `SIG`, in any case, or its number.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| format!("{number} is not a signal number"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {text:?} (expected a name such as TERM or HUP)"))
}

pub fn parse_on_change(text: &str) -> Result<OnChange, String> {
    match text.split_once(':') {
        None if text == "restart" => Ok(OnChange::Restart),
        Some(("signal", signal)) => parse_signal(signal).map(OnChange::Signal),
        _ => Err("expected restart or signal:NAME, for example signal:HUP".into()),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (expected a duration such as 30s, 2m or 500ms)"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn duration_accepts_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn subcommand_name_after_double_dash_is_a_command() {
        let cli = Cli::try_parse_from(["qlarius-env", "--", "check", "--json"]).unwrap();
        assert!(cli.subcommand.is_none());
        assert_eq!(cli.command, ["check", "--json"]);
    }

    #[test]
    fn subcommand_without_double_dash() {
        let cli = Cli::try_parse_from(["qlarius-env", "check", "--path", "/x"]).unwrap();
        assert!(matches!(cli.subcommand, Some(Command::Check(_))));
        assert!(cli.command.is_empty());
    }

    #[test]
    fn watch_value_is_optional() {
        let cli = Cli::try_parse_from(["qlarius-env", "--watch", "--", "app"]).unwrap();
        assert_eq!(cli.supervise.watch, Some(Duration::from_secs(300)));
        let cli = Cli::try_parse_from(["qlarius-env", "--watch=30s", "--", "app"]).unwrap();
        assert_eq!(cli.supervise.watch, Some(Duration::from_secs(30)));
        let cli = Cli::try_parse_from(["qlarius-env", "--", "app"]).unwrap();
        assert_eq!(cli.supervise.watch, None);
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sighup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("10").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn on_change_accepts_restart_or_signal() {
        assert_eq!(parse_on_change("restart").unwrap(), OnChange::Restart);
        assert_eq!(parse_on_change("signal:HUP").unwrap(), OnChange::Signal(Signal::SIGHUP));
        assert!(parse_on_change("signal:").is_err());
        assert!(parse_on_change("reload").is_err());
    }

    #[test]
    fn watch_options_need_watch() {
        let error = Cli::try_parse_from(["qlarius-env", "--on-change", "signal:HUP", "--", "a"]);
        assert!(error.is_err());
        let error = Cli::try_parse_from(["qlarius-env", "--process-group", "--", "a"]);
        assert!(error.is_err());
        let cli = Cli::try_parse_from(["qlarius-env", "--init", "--process-group", "--", "a"]).unwrap();
        assert!(cli.supervise.process_group);
    }

    #[test]
    fn command_follows_double_dash() {
        let cli = Cli::try_parse_from(["qlarius-env", "--", "mix", "phx.server"]).unwrap();
        assert_eq!(cli.command, ["mix", "phx.server"]);
    }
}
