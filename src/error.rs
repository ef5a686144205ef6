//! The error type: what failed, the exit code it maps to, and a hint for the operator.
//!
//! Every message names parameters and variables, never values. Text that comes from
//! outside (AWS error messages, parameter names) passes through [`sanitize`] before it
//! reaches a terminal.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::time::Duration;

/// Exit codes of qlarius-env's own failures. After `execve` every code belongs to the
/// command, so these only appear when the command never started.
///
/// The numbers follow sysexits.h for the tool's failures and the shell's convention for a
/// command that cannot run (126) or is not found (127).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The command line is invalid.
    Usage = 64,
    /// A parameter's name or value cannot become an environment variable.
    DataError = 65,
    /// A required parameter is missing, or the path contains no parameters.
    NoInput = 66,
    /// Parameter Store or the network is unavailable.
    Unavailable = 69,
    /// An internal error; a bug in qlarius-env.
    Software = 70,
    /// Throttled, or the start-up budget ran out.
    TempFail = 75,
    /// Parameter Store sent a response that could not be parsed.
    Protocol = 76,
    /// `put` found the parameter already there and was not asked to overwrite it.
    CantCreate = 73,
    /// Access denied, decryption denied, or credentials rejected.
    NoPermission = 77,
    /// Region or credentials are not configured.
    Config = 78,
    /// The command exists but cannot be executed.
    CannotExecute = 126,
    /// The command was not found.
    NotFound = 127,
}

impl ExitCode {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The class of an error returned by AWS, which decides the exit code and the hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsErrorClass {
    AccessDenied,
    KmsDenied,
    Throttled,
    InvalidCredentials,
    ExpiredCredentials,
    ClockSkew,
    Validation,
    NotFound,
    ServerError,
    Other,
}

/// An error returned by an AWS API, reduced to what an operator needs to act on it.
#[derive(Debug)]
pub struct AwsError {
    /// The API operation, for example `GetParametersByPath`.
    pub operation: &'static str,
    /// The path or parameter name the request was about.
    pub subject: String,
    pub class: AwsErrorClass,
    /// The AWS error code, for example `AccessDeniedException`.
    pub code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub http_status: Option<u16>,
    /// The IAM action the request needed, for example `ssm:GetParametersByPath`.
    pub action: &'static str,
    /// The ARN of the resource, when it can be built from the region and subject.
    pub resource: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),

    #[error("no AWS region is configured")]
    NoRegion,

    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("no AWS credentials found")]
    NoCredentials { detail: String },

    #[error("failed to load AWS credentials: {detail}")]
    Credentials {
        detail: String,
        code: ExitCode,
        hint: Option<String>,
    },

    #[error("{}", describe_aws(.0))]
    Aws(Box<AwsError>),

    #[error("cannot reach Parameter Store at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },

    #[error("timed out after {} waiting for {waiting_on}", humantime::format_duration(*.budget))]
    TimedOut {
        waiting_on: String,
        budget: Duration,
    },

    #[error("invalid response from Parameter Store for {operation} {subject}: {detail}")]
    Protocol {
        operation: &'static str,
        subject: String,
        detail: String,
    },

    #[error("0 parameters under {path}")]
    EmptyPath { path: String },

    #[error("not SecureString, so stored unencrypted: {}", .parameters.join(", "))]
    NotSecure { parameters: Vec<String> },

    #[error("no parameters under {path} carry label {label}")]
    NoLabelled { path: String, label: String },

    #[error("parameter{} not found: {}", plural(.missing.len()), describe_missing(.missing))]
    NamedNotFound {
        /// Each requested name (selector included) with the variable it was mapped to.
        missing: Vec<(String, String)>,
    },

    #[error("{path} is a parameter, not a path")]
    ParameterNotPath { path: String },

    #[error("missing required variable{}: {}", plural(.missing.len()), .missing.join(", "))]
    MissingRequired {
        missing: Vec<String>,
        paths: Vec<String>,
        known: Vec<(String, String)>,
    },

    #[error("parameter {parameter} maps to {variable:?}, which is not a valid variable name")]
    InvalidName { parameter: String, variable: String },

    #[error("parameters {first} and {second} both map to {variable}")]
    Collision {
        first: String,
        second: String,
        variable: String,
    },

    #[error("parameter {parameter} has a value with a NUL byte, which an environment variable cannot hold")]
    NulInValue { parameter: String },

    #[error("parameter {name} already exists")]
    ParameterExists { name: String },

    #[error("invalid value: {reason}")]
    InvalidValue { reason: String },

    #[error("cannot read the value: {detail}")]
    ReadValue { detail: String },

    #[error("{command}: command not found")]
    CommandNotFound { command: String },

    #[error("{command}: cannot execute: {cause}")]
    CannotExecute { command: String, cause: String },

    #[error("{0}")]
    Internal(String),
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn describe_missing(missing: &[(String, String)]) -> String {
    missing
        .iter()
        .map(|(name, variable)| format!("{name} (for {variable})"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_aws(e: &AwsError) -> String {
    let mut line = format!("{} {} failed", e.operation, e.subject);
    match (&e.code, e.http_status) {
        (Some(code), _) => line.push_str(&format!(": {code}")),
        (None, Some(status)) => line.push_str(&format!(": HTTP {status}")),
        (None, None) => {}
    }
    if let Some(message) = &e.message {
        line.push_str(&format!(": {message}"));
    }
    if let Some(id) = &e.request_id {
        line.push_str(&format!(" (request id {id})"));
    }
    line
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::InvalidPath { .. } => ExitCode::Usage,
            Error::NoRegion | Error::NoCredentials { .. } => ExitCode::Config,
            Error::Credentials { code, .. } => *code,
            Error::Aws(e) => match e.class {
                AwsErrorClass::AccessDenied
                | AwsErrorClass::KmsDenied
                | AwsErrorClass::InvalidCredentials
                | AwsErrorClass::ExpiredCredentials => ExitCode::NoPermission,
                AwsErrorClass::Throttled => ExitCode::TempFail,
                AwsErrorClass::ClockSkew => ExitCode::Config,
                AwsErrorClass::Validation => ExitCode::DataError,
                AwsErrorClass::NotFound => ExitCode::NoInput,
                AwsErrorClass::ServerError | AwsErrorClass::Other => ExitCode::Unavailable,
            },
            Error::Unreachable { .. } => ExitCode::Unavailable,
            Error::TimedOut { .. } => ExitCode::TempFail,
            Error::Protocol { .. } => ExitCode::Protocol,
            Error::EmptyPath { .. }
            | Error::NoLabelled { .. }
            | Error::NamedNotFound { .. }
            | Error::ParameterNotPath { .. }
            | Error::MissingRequired { .. } => ExitCode::NoInput,
            Error::InvalidName { .. }
            | Error::Collision { .. }
            | Error::NulInValue { .. }
            | Error::NotSecure { .. } => {
                ExitCode::DataError
            }
            Error::ParameterExists { .. } => ExitCode::CantCreate,
            Error::InvalidValue { .. } => ExitCode::DataError,
            Error::ReadValue { .. } => ExitCode::NoInput,
            Error::CommandNotFound { .. } => ExitCode::NotFound,
            Error::CannotExecute { .. } => ExitCode::CannotExecute,
            Error::Internal(_) => ExitCode::Software,
        }
    }

    /// Returns the likely fix, printed on a `hint:` line below the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage(_) => Some("run 'qlarius-env --help' for usage".into()),
            Error::NoRegion => Some(
                "set one of: --region, AWS_REGION, AWS_DEFAULT_REGION, or 'region' in the \
                 AWS profile (qlarius-env does not ask instance metadata for a region)"
                    .into(),
            ),
            Error::InvalidPath { .. } => None,
            Error::NoCredentials { detail } => Some(format!(
                "tried, in order: {detail}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 choose a profile with --profile or AWS_PROFILE, or run where an IAM role is attached"
            )),
            Error::Credentials { hint, .. } => hint.clone(),
            Error::Aws(e) => aws_hint(e),
            Error::Unreachable { .. } => Some(
                "check the endpoint URL, DNS, firewall and HTTPS_PROXY/NO_PROXY; \
                 from a private network Parameter Store needs a NAT gateway or a VPC endpoint"
                    .into(),
            ),
            // A budget spent on refused connections is a reachability problem, not a
            // slow network.
            Error::TimedOut { waiting_on, .. } if waiting_on.contains("tunnel error") => Some(
                "the proxy refused to open a tunnel to Parameter Store: check HTTPS_PROXY, \
                 its credentials and what it allows, or add the endpoint to NO_PROXY"
                    .into(),
            ),
            Error::TimedOut { waiting_on, .. } if waiting_on.contains("connection error") => Some(
                "every attempt failed to connect: check the endpoint URL, DNS, firewall and \
                 HTTPS_PROXY/NO_PROXY"
                    .into(),
            ),
            Error::TimedOut { .. } => Some(
                "raise --timeout on a slow network; a throttled fleet also benefits from --splay"
                    .into(),
            ),
            Error::Protocol { .. } => {
                Some("check that the endpoint URL points at Parameter Store".into())
            }
            Error::EmptyPath { .. } => Some(
                "parameter names are case-sensitive: check the path's spelling and case, \
                 or pass --allow-empty if an empty path is expected"
                    .into(),
            ),
            Error::NotSecure { .. } => Some(
                "recreate each as a SecureString (qlarius-env put NAME --overwrite), or drop \
                 --require-secure"
                    .into(),
            ),
            Error::NoLabelled { .. } => Some(
                "labels are case-sensitive; parameters without the label are left out of a \
                 labelled load"
                    .into(),
            ),
            Error::NamedNotFound { .. } => Some(
                "parameter names are case-sensitive; check each name, and the version or \
                 label after ':'"
                    .into(),
            ),
            Error::ParameterNotPath { path } => {
                let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("/");
                let parent = if parent.is_empty() { "/" } else { parent };
                Some(format!(
                    "--path loads the parameters below a path: use --path {parent} to load it"
                ))
            }
            Error::MissingRequired {
                missing,
                paths,
                known,
            } => {
                let expected: Vec<String> = missing
                    .iter()
                    .filter_map(|var| {
                        known
                            .iter()
                            .find(|(v, _)| v == var)
                            .map(|(v, name)| format!("{v} from {name}"))
                    })
                    .collect();
                let mut hint = format!(
                    "no parameter under {} maps to {}; names are case-sensitive",
                    paths.join(", "),
                    if missing.len() == 1 { "it" } else { "them" }
                );
                if !expected.is_empty() {
                    hint.push_str(&format!(". Expected: {}", expected.join(", ")));
                }
                Some(hint)
            }
            Error::InvalidName { .. } => Some(
                "rename the parameter so the converted name starts with a letter or '_'".into(),
            ),
            Error::Collision { .. } => {
                Some("rename or delete one of the two parameters".into())
            }
            Error::NulInValue { parameter } => Some(format!(
                "store the value of {parameter} without the NUL byte, or encode it (base64)"
            )),
            Error::ParameterExists { .. } => Some(
                "pass --overwrite to store a new version; earlier versions stay in the \
                 parameter's history"
                    .into(),
            ),
            Error::InvalidValue { .. } | Error::ReadValue { .. } => None,
            Error::CommandNotFound { .. } => {
                Some("check the command's spelling and PATH".into())
            }
            Error::CannotExecute { .. } => Some(
                "check the file's execute permission and its '#!' line".into(),
            ),
            Error::Internal(_) => None,
        }
    }
}

fn aws_hint(e: &AwsError) -> Option<String> {
    let resource = e.resource.as_deref().unwrap_or(&e.subject);
    match e.class {
        AwsErrorClass::AccessDenied if e.action == "ssm:PutParameter" => Some(format!(
            "the caller needs {} on {resource}, and kms:Encrypt on the parameter's key \
             for a customer managed key",
            e.action
        )),
        AwsErrorClass::AccessDenied => Some(format!(
            "the caller needs {} on {resource}; 'qlarius-env policy' prints a \
             least-privilege policy that grants it",
            e.action
        )),
        AwsErrorClass::KmsDenied if e.action == "ssm:PutParameter" => Some(
            "the caller needs kms:Encrypt on the KMS key given with --key-id (and \
             kms:GenerateDataKey for the advanced tier), and the key must be enabled"
                .into(),
        ),
        AwsErrorClass::KmsDenied => Some(format!(
            "the caller needs kms:Decrypt on the KMS key that encrypts the SecureString \
             parameters under {}: for a customer managed key, add the IAM user as a key user \
             in the key's policy. The AWS managed key aws/ssm cannot be edited and already \
             lets the account's principals decrypt through Parameter Store, so a denial there \
             points to an explicit deny or a parameter encrypted with another key",
            e.subject
        )),
        AwsErrorClass::Throttled => Some(
            "Parameter Store throttled every attempt: raise AWS_MAX_ATTEMPTS, spread \
             start-ups with --splay, or ask AWS for a higher throughput limit"
                .into(),
        ),
        AwsErrorClass::InvalidCredentials => Some(
            "AWS rejected the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (or the profile), and that the access key is still active"
                .into(),
        ),
        AwsErrorClass::ExpiredCredentials => Some(
            "the session credentials have expired: refresh them (for an SSO profile, \
             run 'aws sso login --profile NAME')"
                .into(),
        ),
        AwsErrorClass::ClockSkew => Some(
            "AWS rejected the request's timestamp: check the system clock (NTP)".into(),
        ),
        AwsErrorClass::Validation => None,
        AwsErrorClass::NotFound => Some(
            "parameter names are case-sensitive; check the name, and the version or label after ':'"
                .into(),
        ),
        AwsErrorClass::ServerError => Some(
            "Parameter Store failed on every attempt; try again, or raise AWS_MAX_ATTEMPTS".into(),
        ),
        AwsErrorClass::Other => None,
    }
}

/// Replaces every occurrence of a value of four characters or more in `text` with
/// `[redacted]`. Shorter values are left alone: they would mangle ordinary words and are
/// not secrets anyway.
pub fn redact<'a>(text: &str, values: impl IntoIterator<Item = &'a SecretString>) -> String {
    let mut text = text.to_string();
    for value in values {
        let value = value.expose_secret();
        if value.len() >= 4 && text.contains(value) {
            text = text.replace(value, "[redacted]");
        }
    }
    text
}

/// Replaces control characters in untrusted text with escapes, so that a hostile or
/// broken server cannot move the cursor or hide lines on the operator's terminal.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The error line and hint as printed on stderr.
pub struct Report<'a>(pub &'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "qlarius-env: error: {}", sanitize(&self.0.to_string()))?;
        if let Some(hint) = self.0.hint() {
            write!(f, "\nqlarius-env: hint: {}", sanitize(&hint))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_documented_table() {
        let table = [
            (ExitCode::Usage, 64),
            (ExitCode::DataError, 65),
            (ExitCode::NoInput, 66),
            (ExitCode::Unavailable, 69),
            (ExitCode::Software, 70),
            (ExitCode::TempFail, 75),
            (ExitCode::Protocol, 76),
            (ExitCode::CantCreate, 73),
            (ExitCode::NoPermission, 77),
            (ExitCode::Config, 78),
            (ExitCode::CannotExecute, 126),
            (ExitCode::NotFound, 127),
        ];
        for (code, number) in table {
            assert_eq!(code.code(), number, "{code:?}");
        }
    }

    #[test]
    fn sanitize_escapes_control_characters() {
        assert_eq!(sanitize("a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(sanitize("plain /qlarius/x"), "plain /qlarius/x");
    }

    #[test]
    fn missing_required_lists_every_variable() {
        let error = Error::MissingRequired {
            missing: vec!["CLOAK_KEY".into(), "TWILIO_AUTH_TOKEN".into()],
            paths: vec!["/qlarius".into()],
            known: vec![("CLOAK_KEY".into(), "/qlarius/cloak-key".into())],
        };
        assert_eq!(
            error.to_string(),
            "missing required variables: CLOAK_KEY, TWILIO_AUTH_TOKEN"
        );
        let hint = error.hint().unwrap();
        assert!(hint.contains("CLOAK_KEY from /qlarius/cloak-key"), "{hint}");
        assert_eq!(error.exit_code(), ExitCode::NoInput);
    }

    #[test]
    fn parameter_not_path_hint_names_parent() {
        let error = Error::ParameterNotPath {
            path: "/MyApp/db/password".into(),
        };
        assert!(error.hint().unwrap().contains("--path /MyApp/db"));
    }

    #[test]
    fn aws_error_line_has_code_and_request_id() {
        let error = Error::Aws(Box::new(AwsError {
            operation: "GetParametersByPath",
            subject: "/qlarius".into(),
            class: AwsErrorClass::AccessDenied,
            code: Some("AccessDeniedException".into()),
            message: Some("User: arn:aws:iam::111122223333:user/x is not authorized".into()),
            request_id: Some("req-1".into()),
            http_status: Some(400),
            action: "ssm:GetParametersByPath",
            resource: Some("arn:aws:ssm:us-east-1:*:parameter/qlarius/*".into()),
        }));
        let line = error.to_string();
        assert!(line.starts_with("GetParametersByPath /qlarius failed: AccessDeniedException: User:"));
        assert!(line.ends_with("(request id req-1)"));
        assert_eq!(error.exit_code(), ExitCode::NoPermission);
        assert!(error.hint().unwrap().contains("ssm:GetParametersByPath on arn:aws:ssm"));
    }

    #[test]
    fn timeout_hint_follows_last_failure() {
        let timed_out = |waiting_on: &str| Error::TimedOut {
            waiting_on: waiting_on.into(),
            budget: Duration::from_secs(5),
        };
        let proxy = timed_out("GetParametersByPath /q (the last attempt failed with a connection error (tunnel error: unsuccessful))");
        assert!(proxy.hint().unwrap().contains("HTTPS_PROXY"));
        let refused = timed_out("GetParametersByPath /q (the last attempt failed with a connection error (connection refused))");
        assert!(refused.hint().unwrap().starts_with("every attempt failed to connect"));
        let slow = timed_out("GetParametersByPath /q");
        assert!(slow.hint().unwrap().starts_with("raise --timeout"));
    }
}
