//! Logging to stderr with `tracing`; stdout belongs to the command.
//!
//! Lines read `qlarius-env: LEVEL: message`. qlarius-env's own events follow -v/-q or
//! `QLARIUS_ENV_LOG`; events from the AWS SDK and its HTTP stack are capped at `info`
//! whatever the settings, because at `debug` and `trace` they can contain request and
//! response bodies, and a GetParametersByPath response body holds decrypted values.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

const OWN_TARGET: &str = "qlarius_env";

/// The highest level any other crate may log at.
const FOREIGN_CAP: LevelFilter = LevelFilter::INFO;

/// Environment variables that make the AWS SDK log request bodies. They are removed from
/// qlarius-env's own environment before the SDK starts and passed on to the command.
pub const SDK_BODY_LOGGING_VARIABLES: [&str; 1] = ["LOG_SIGNABLE_BODY"];

/// Installs the global subscriber. `filter` is `QLARIUS_ENV_LOG`, comma-separated
/// `target=level` directives or a bare level (`debug`), which wins over -v/-q when set.
pub fn init(verbose: u8, quiet: u8, filter: Option<&str>) {
    let own_level = match (verbose, quiet) {
        (0, 0) => LevelFilter::INFO,
        (0, 1) => LevelFilter::WARN,
        (0, _) => LevelFilter::ERROR,
        (1, _) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // -qq promises no warnings at all, the SDK's included.
    let foreign_level = if quiet >= 2 { LevelFilter::ERROR } else { LevelFilter::WARN };
    let default = Targets::new()
        .with_target(OWN_TARGET, own_level)
        .with_default(foreign_level);
    let requested = match filter.map(str::trim).filter(|f| !f.is_empty()) {
        Some(directives) => directives.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("qlarius-env: warning: ignoring QLARIUS_ENV_LOG: {e}");
            default.clone()
        }),
        None => default,
    };
    let cap = Targets::new()
        .with_target(OWN_TARGET, LevelFilter::TRACE)
        .with_default(FOREIGN_CAP);

    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(LineFormat)
        .with_filter(requested.and(cap));
    // A second initialisation (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let metadata = event.metadata();
        let level = match *metadata.level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(writer, "qlarius-env: {level}: ")?;
        if !metadata.target().starts_with(OWN_TARGET) {
            write!(writer, "{}: ", metadata.target())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
