//! Retry settings and the retry log.
//!
//! The SDK retries throttling, 5xx, timeouts and connection errors with exponential
//! backoff and full jitter: each delay is uniform between zero and
//! `min(1 s × 2^(attempt-1), 20 s)` (aws-smithy-runtime 1.16). It does not retry access
//! denied, not found or validation errors. qlarius-env chooses the mode and the number
//! of attempts, and logs every retry, because the SDK logs them at debug level only.

use crate::error::Error;
use aws_sdk_ssm::operation::get_parameters::GetParametersError;
use aws_sdk_ssm::operation::get_parameters_by_path::GetParametersByPathError;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, Error as OperationError, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::{Metadata, OrchestratorError};
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use aws_smithy_types::retry::{RetryConfig, RetryMode};
use std::sync::Mutex;
use std::time::Instant;

/// The cause of the latest failed attempt of any request. An error for a budget that ran
/// out during retries includes it, so the operator sees why the requests were retried.
static LAST_FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Returns the cause of the latest failed attempt, if any attempt failed.
pub fn last_failure() -> Option<String> {
    LAST_FAILURE.lock().ok().and_then(|last| last.clone())
}

/// Attempts per request when AWS_MAX_ATTEMPTS is not set. Chosen with
/// `scripts/fleet-start.py` (200 launches against a fake that throttles above 40
/// requests a second): every launch started in each run with 8 attempts, while 5 lost a
/// launch or two in some runs and 3 lost over a third. docs/benchmarks.md has the numbers.
/// The start-up budget, not the attempt count, bounds how long the retries last.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// Retry mode when AWS_RETRY_MODE is not set. In the same simulation adaptive mode let
/// only 93 to 182 of 200 launches start. The others ran out of the 30 s budget while the
/// client-side rate limiter, which each process keeps for itself, delayed their requests.
pub const DEFAULT_RETRY_MODE: RetryMode = RetryMode::Standard;

/// Builds the retry settings from AWS_RETRY_MODE and AWS_MAX_ATTEMPTS, or the defaults
/// above. Invalid values are rejected here, because the SDK would panic on them.
///
/// NOTE: `retry_mode` and `max_attempts` in the shared config file are not read; only
/// the environment variables are.
pub fn retry_config(env: impl Fn(&str) -> Option<String>) -> Result<RetryConfig, Error> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());

    let mode = match set("AWS_RETRY_MODE") {
        None => DEFAULT_RETRY_MODE,
        Some(text) => match text.trim().to_ascii_lowercase().as_str() {
            "standard" | "legacy" => RetryMode::Standard,
            "adaptive" => RetryMode::Adaptive,
            _ => {
                return Err(Error::Usage(format!(
                    "invalid AWS_RETRY_MODE {text:?}: expected standard or adaptive"
                )));
            }
        },
    };
    let max_attempts = match set("AWS_MAX_ATTEMPTS") {
        None => DEFAULT_MAX_ATTEMPTS,
        Some(text) => match text.trim().parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(Error::Usage(format!(
                    "invalid AWS_MAX_ATTEMPTS {text:?}: expected a whole number of at least 1"
                )));
            }
        },
    };

    let config = match mode {
        RetryMode::Adaptive => RetryConfig::adaptive(),
        _ => RetryConfig::standard(),
    };
    Ok(config.with_max_attempts(max_attempts))
}

/// An interceptor that logs each retry once, with the error that caused it.
///
/// The failed attempt is recorded after it completes, and logged when the next attempt
/// begins, so that only retries that really happen are logged (the SDK decides after
/// the attempt whether to retry).
#[derive(Debug)]
pub struct RetryLog;

/// The cause and time of the previous attempt's failure.
#[derive(Debug, Clone)]
struct FailedAttempt {
    reason: String,
    at: Instant,
}

impl Storable for FailedAttempt {
    type Storer = StoreReplace<Self>;
}

impl Intercept for RetryLog {
    fn name(&self) -> &'static str {
        "RetryLog"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(error)) = context.output_or_error() {
            let status = context.response().map(|r| r.status().as_u16());
            let reason = describe_failure(error, status);
            if let Ok(mut last) = LAST_FAILURE.lock() {
                *last = Some(reason.clone());
            }
            cfg.interceptor_state().store_put(FailedAttempt {
                reason,
                at: Instant::now(),
            });
        }
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        if attempt < 2 {
            return Ok(());
        }
        let Some(failed) = cfg.load::<FailedAttempt>() else {
            return Ok(());
        };
        let operation = cfg.load::<Metadata>().map_or("request", |m| m.name());
        let max_attempts = cfg.load::<RetryConfig>().map(|r| r.max_attempts());
        let of_max = max_attempts.map(|m| format!(" of {m}")).unwrap_or_default();
        tracing::warn!(
            "{operation} failed with {}; retrying after {:.1} s (attempt {attempt}{of_max})",
            failed.reason,
            failed.at.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// Names the cause of a failed attempt: the AWS error code when there is one, else the
/// kind of transport failure.
fn describe_failure(error: &OrchestratorError<OperationError>, status: Option<u16>) -> String {
    let status_text = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    if let Some(operation_error) = error.as_operation_error() {
        let code = operation_error
            .downcast_ref::<GetParametersByPathError>()
            .and_then(|e| e.code())
            .or_else(|| {
                operation_error
                    .downcast_ref::<GetParametersError>()
                    .and_then(|e| e.code())
            });
        return match code {
            Some(code) => format!("{}{status_text}", crate::error::sanitize(code)),
            None => format!("an error response{status_text}"),
        };
    }
    if error.is_timeout_error() {
        return "a timeout".into();
    }
    if let Some(connector_error) = error.as_connector_error() {
        let kind = if connector_error.is_timeout() {
            "a timeout"
        } else {
            "a connection error"
        };
        return format!("{kind} ({})", crate::ssm::error_chain(connector_error));
    }
    if error.is_response_error() {
        return format!("an unreadable response{status_text}");
    }
    "an error".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<RetryConfig, Error> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        retry_config(|name| vars.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn defaults_apply_when_unset() {
        let c = config(&[]).unwrap();
        assert_eq!(c.max_attempts(), DEFAULT_MAX_ATTEMPTS);
        assert_eq!(c.mode(), DEFAULT_RETRY_MODE);
        assert_eq!(config(&[("AWS_MAX_ATTEMPTS", " ")]).unwrap().max_attempts(), DEFAULT_MAX_ATTEMPTS);
    }

    #[test]
    fn environment_overrides_each_setting() {
        let c = config(&[("AWS_MAX_ATTEMPTS", "10"), ("AWS_RETRY_MODE", "adaptive")]).unwrap();
        assert_eq!(c.max_attempts(), 10);
        assert_eq!(c.mode(), RetryMode::Adaptive);
        let c = config(&[("AWS_RETRY_MODE", "Standard")]).unwrap();
        assert_eq!(c.max_attempts(), DEFAULT_MAX_ATTEMPTS);
        assert_eq!(c.mode(), RetryMode::Standard);
        assert_eq!(config(&[("AWS_MAX_ATTEMPTS", "1")]).unwrap().max_attempts(), 1);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (name, value) in [
            ("AWS_MAX_ATTEMPTS", "0"),
            ("AWS_MAX_ATTEMPTS", "three"),
            ("AWS_RETRY_MODE", "fast"),
        ] {
            let error = config(&[(name, value)]).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }
}
