//! `qlarius-env put`: create or update a SecureString parameter. The value comes from
//! standard input, a prompt without echo, or the random source. It never comes from an
//! argument, so it stays out of shell history and `ps`.

use super::{keygen, process_env};
use crate::cli::{AwsArgs, SelectionArgs};
use crate::aws;
use crate::config::{Config, normalize_path};
use crate::error::Error;
use crate::hardening;
use crate::launch::block_on;
use crate::ssm::{self, Parameter};
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{ParameterTier, ParameterType};
use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use std::io::{IsTerminal, Read};
use zeroize::Zeroizing;

const AFTER_HELP: &str = "\
The value is read from standard input. On a terminal, qlarius-env prompts twice without
echo. From a pipe or file, it reads everything and removes exactly one trailing newline
(\\n or \\r\\n), the one that echo, here-strings and editors add; --keep-newline stores the
input byte for byte. The value never appears in arguments, logs or output, and is removed
from AWS error messages that repeat it.

An existing parameter is changed only with --overwrite, which stores a new version.

Exit codes: 0 stored; 64 invalid command line; 65 invalid value (empty, a NUL byte, not
UTF-8, too long); 66 no value could be read; 73 the parameter exists and --overwrite was
not given; 69, 75, 77 and 78 as for a launch.

Examples:
   qlarius-env put /qlarius/twilio/auth-token                 # prompts for the value
   qlarius-env put /qlarius/cloak-key --generate 32           # a new random key, never shown
   qlarius-env put /qlarius/tls/key --keep-newline < key.pem
   pbpaste | qlarius-env put /qlarius/twilio/account-sid --overwrite";

/// Values above this many bytes need the Advanced tier.
const STANDARD_MAX_BYTES: usize = 4096;
/// The Advanced tier's limit.
const ADVANCED_MAX_BYTES: usize = 8192;

/// Store a SecureString parameter from standard input or a generated key.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct PutArgs {
    /// Full name of the parameter, for example /qlarius/cloak-key.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Anything after NAME. A value typed here is rejected without being printed, instead
    /// of clap's usage error, which would repeat it.
    #[arg(hide = true, value_name = "VALUE")]
    pub stray: Vec<std::ffi::OsString>,

    /// KMS key to encrypt with: a key id, key ARN, alias name or alias ARN.
    #[arg(long, value_name = "KEY", default_value = "alias/aws/ssm")]
    pub key_id: String,

    /// Description stored with the parameter.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,

    /// Parameter tier: standard values hold up to 4096 bytes, advanced up to 8192.
    #[arg(long, value_enum, default_value_t = Tier::Standard)]
    pub tier: Tier,

    /// Replace an existing parameter (stores a new version).
    #[arg(long)]
    pub overwrite: bool,

    /// Store a new random key of BYTES bytes (16 to 4096), base64-encoded, instead of
    /// reading a value. The key is never printed.
    #[arg(long, value_name = "BYTES", value_parser = keygen::parse_key_length)]
    pub generate: Option<usize>,

    /// Store piped input byte for byte, including a final newline.
    #[arg(long, conflicts_with = "generate")]
    pub keep_newline: bool,

    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tier {
    Standard,
    Advanced,
    IntelligentTiering,
}

impl Tier {
    fn to_sdk(self) -> ParameterTier {
        match self {
            Tier::Standard => ParameterTier::Standard,
            Tier::Advanced => ParameterTier::Advanced,
            Tier::IntelligentTiering => ParameterTier::IntelligentTiering,
        }
    }
}

pub fn run(args: PutArgs) -> Result<(), Error> {
    // The value is in this process's memory from here on.
    let _core_limit = hardening::protect_process();
    if !args.stray.is_empty() {
        return Err(Error::Usage(
            "put takes the value on standard input, not as an argument; nothing was stored. \
             A secret typed on the command line is now in the shell history: rotate it"
                .into(),
        ));
    }
    let name = ensure_parameter_name(&args.name)?;
    let config = Config::from_args(SelectionArgs::from_aws(args.aws), process_env)?;

    let value = match args.generate {
        Some(bytes) => keygen::generate_key(bytes)?,
        None => read_value(&name, args.keep_newline)?,
    };
    ensure_value(&value, args.tier)?;

    let request = Request {
        name: &name,
        value: &value,
        key_id: &args.key_id,
        description: args.description.as_deref(),
        tier: args.tier,
        overwrite: args.overwrite,
    };
    let version = block_on(put_parameter(&config, &request))?;
    tracing::info!(
        "stored {name} as a SecureString, version {version}, encrypted with {}",
        args.key_id
    );
    Ok(())
}

/// Checks a parameter name: a leading '/', only the characters Parameter Store allows,
/// and not under the reserved `aws` and `ssm` prefixes.
fn ensure_parameter_name(name: &str) -> Result<String, Error> {
    let usage = |reason: &str| Error::Usage(format!("invalid parameter name {name:?}: {reason}"));
    let normalized = normalize_path(name).map_err(|e| match e {
        Error::InvalidPath { reason, .. } => usage(&reason),
        other => other,
    })?;
    if normalized == "/" || normalized != name {
        return Err(usage("a name cannot end with '/'"));
    }
    let first = normalized[1..].split('/').next().unwrap_or_default().to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        return Err(usage("names that begin with 'aws' or 'ssm' are reserved by AWS"));
    }
    Ok(normalized)
}

/// Reads the value from a prompt on a terminal, or from piped standard input.
fn read_value(name: &str, keep_newline: bool) -> Result<SecretString, Error> {
    if std::io::stdin().is_terminal() {
        return prompt_value(name);
    }

    // Read one byte more than the largest value plus a CRLF, to detect a longer input
    // without reading it all.
    let mut raw = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take((ADVANCED_MAX_BYTES + 3) as u64)
        .read_to_end(&mut raw)
        .map_err(|e| Error::ReadValue { detail: format!("standard input: {e}") })?;
    let bytes: &[u8] = if keep_newline { &raw } else { strip_one_newline(&raw) };
    let text = std::str::from_utf8(bytes).map_err(|_| Error::InvalidValue {
        reason: "standard input is not valid UTF-8; Parameter Store values are text".into(),
    })?;
    Ok(SecretString::from(text.to_string()))
}

/// Removes one trailing `\n` or `\r\n`, if present.
pub fn strip_one_newline(bytes: &[u8]) -> &[u8] {
    if let Some(rest) = bytes.strip_suffix(b"\r\n") {
        rest
    } else if let Some(rest) = bytes.strip_suffix(b"\n") {
        rest
    } else {
        bytes
    }
}

fn prompt_value(name: &str) -> Result<SecretString, Error> {
    let read = |prompt: String| {
        rpassword::prompt_password(prompt)
            .map(SecretString::from)
            .map_err(|e| Error::ReadValue { detail: format!("terminal: {e}") })
    };
    let first = read(format!("Value for {name}: "))?;
    let second = read("Repeat the value: ".to_string())?;
    if first.expose_secret() != second.expose_secret() {
        return Err(Error::InvalidValue {
            reason: "the two entries differ; nothing was stored".into(),
        });
    }
    Ok(first)
}

fn ensure_value(value: &SecretString, tier: Tier) -> Result<(), Error> {
    let text = value.expose_secret();
    let invalid = |reason: String| Err(Error::InvalidValue { reason });
    if text.is_empty() {
        return invalid("the value is empty, and Parameter Store rejects empty values".into());
    }
    if text.contains('\0') {
        return invalid("the value contains a NUL byte, which an environment variable cannot hold".into());
    }
    if text.len() > ADVANCED_MAX_BYTES {
        return invalid(format!("the value is longer than {ADVANCED_MAX_BYTES} bytes, the most any tier holds"));
    }
    if tier == Tier::Standard && text.len() > STANDARD_MAX_BYTES {
        return invalid(format!(
            "the value is {} bytes; the standard tier holds up to {STANDARD_MAX_BYTES}: pass --tier advanced",
            text.len()
        ));
    }
    Ok(())
}

struct Request<'a> {
    name: &'a str,
    value: &'a SecretString,
    key_id: &'a str,
    description: Option<&'a str>,
    tier: Tier,
    overwrite: bool,
}

/// Sends PutParameter and returns the new version.
async fn put_parameter(config: &Config, request: &Request<'_>) -> Result<i64, Error> {
    let aws = aws::configure(config).await?;
    let credentials = aws::resolve_credentials(&aws).await?;
    let client = ssm::client(&aws, credentials);

    let result = client
        .put_parameter()
        .name(request.name)
        .value(request.value.expose_secret())
        .r#type(ParameterType::SecureString)
        .key_id(request.key_id)
        .set_description(request.description.map(str::to_string))
        .tier(request.tier.to_sdk())
        .overwrite(request.overwrite)
        .send()
        .await;

    match result {
        Ok(output) => Ok(output.version),
        Err(error) if error.code() == Some("ParameterAlreadyExists") => Err(Error::ParameterExists {
            name: request.name.to_string(),
        }),
        Err(error) => {
            let echoed = [Parameter {
                name: request.name.to_string(),
                value: request.value.clone(),
                kind: "SecureString".into(),
                version: 0,
            }];
            let mut error = ssm::classify(error, "PutParameter", "ssm:PutParameter", request.name, &aws, &echoed);
            if let Error::Aws(details) = &mut error {
                details.message = details.message.take().map(|m| redact_echoed_value(&m));
            }
            Err(error)
        }
    }
}

/// Removes the value from an AWS validation message of the form
/// `Value '...' at 'value' failed to satisfy constraint`, which repeats the input even when
/// it was cut or changed on the way, so an exact match could miss it.
pub fn redact_echoed_value(message: &str) -> String {
    const OPEN: &str = "Value '";
    const CLOSE: &str = "' at 'value'";
    let mut text = message.to_string();
    let mut search_from = 0;
    while let Some(start) = text[search_from..].find(OPEN).map(|i| i + search_from) {
        let value_start = start + OPEN.len();
        let Some(end) = text[value_start..].find(CLOSE).map(|i| i + value_start) else {
            break;
        };
        text.replace_range(value_start..end, "[redacted]");
        search_from = value_start + "[redacted]".len() + CLOSE.len();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_stripped() {
        assert_eq!(strip_one_newline(b"key\n"), b"key");
        assert_eq!(strip_one_newline(b"key\r\n"), b"key");
        assert_eq!(strip_one_newline(b"key\n\n"), b"key\n");
        assert_eq!(strip_one_newline(b"key"), b"key");
        assert_eq!(strip_one_newline(b" key \t"), b" key \t");
    }

    #[test]
    fn parameter_names() {
        assert_eq!(ensure_parameter_name("/qlarius/cloak-key").unwrap(), "/qlarius/cloak-key");
        for bad in ["qlarius/x", "/", "/qlarius/", "/a b", "/aws/x", "/SSM/x", "/awsome"] {
            assert!(ensure_parameter_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn value_limits() {
        let ok = SecretString::from("x".repeat(STANDARD_MAX_BYTES));
        assert!(ensure_value(&ok, Tier::Standard).is_ok());
        let long = SecretString::from("x".repeat(STANDARD_MAX_BYTES + 1));
        assert!(ensure_value(&long, Tier::Standard).is_err());
        assert!(ensure_value(&long, Tier::Advanced).is_ok());
        assert!(ensure_value(&SecretString::from(""), Tier::Advanced).is_err());
        assert!(ensure_value(&SecretString::from("a\0b"), Tier::Advanced).is_err());
    }

    #[test]
    fn echoed_value_is_redacted() {
        let message = "1 validation error detected: Value 'sekrit\nline' at 'value' failed to satisfy constraint";
        assert_eq!(
            redact_echoed_value(message),
            "1 validation error detected: Value '[redacted]' at 'value' failed to satisfy constraint"
        );
        assert_eq!(redact_echoed_value("no value here"), "no value here");
    }
}
