//! `qlarius-env check`: the troubleshooting checklist as one command. It runs the same
//! steps as a launch (region, credentials, load, mapping, required variables) and reports
//! each one without printing any value, then exits with the code the launch would have.
//!
//! Beyond the launch it calls STS GetCallerIdentity and Parameter Store
//! DescribeParameters (for KMS key ids and dates, which GetParametersByPath does not
//! return). Their failures are shown but do not change the exit code, because a launch
//! never makes those calls.

mod render;

use super::identity::{self, CallerIdentity};
use crate::aws::{self, Aws};
use crate::cli::SelectionArgs;
use crate::config::{Config, MapSpec};
use crate::error::{AwsErrorClass, Error, sanitize};
use crate::hardening;
use crate::launch::block_on;
use crate::load;
use crate::mapping;
use crate::ssm::{self, Parameter};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ssm::types::{ParameterMetadata, ParameterStringFilter};
use clap::Args;
use secrecy::ExposeSecret;
use serde::Serialize;
use std::collections::BTreeMap;

const AFTER_HELP: &str = "\
Reports, without printing any value: the region and where it came from; the credential
source and the caller identity (STS GetCallerIdentity); each parameter under the paths
with its type, KMS key id, version, last-modified date and value length; whether
decryption works; the name-to-variable mapping with collisions and invalid names; the
required variables; and the variables a launch would replace in the current environment.

The KMS key id and date come from ssm:DescribeParameters, which a launch does not need;
without that permission check still runs and leaves them out ('qlarius-env policy
--check' adds it). GetCallerIdentity goes to AWS_ENDPOINT_URL_STS, else to the Parameter
Store endpoint when one is set, else to the region's STS endpoint.

Exit codes: 0 when a launch with the same options would start the command; otherwise the
code the launch would exit with (see 'qlarius-env --help').

Examples:
   qlarius-env check
   qlarius-env check --path /myapp/prod --require DATABASE_URL
   qlarius-env check --json | jq '.parameters[] | select(.type != \"SecureString\")'";

/// Check region, credentials, parameters and names without printing any value.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct CheckArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Print the report as one JSON document on standard output.
    #[arg(long)]
    pub json: bool,
}

/// Maximum DescribeParameters pages read per path, at 50 parameters a page.
const MAX_DESCRIBE_PAGES: usize = 200;

pub fn run(args: CheckArgs) -> Result<(), Error> {
    // Decrypted values pass through this process, as in a launch.
    let _core_limit = hardening::protect_process();
    let config = Config::from_args(args.selection, super::process_env)?;

    let mut report = Report::default();
    let verdict = block_on(async { Ok(inspect(&config, &mut report).await) })?;
    report.finish(verdict.as_ref().err());

    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Internal(format!("cannot encode the report: {e}")))?;
        text.push('\n');
        text
    } else {
        render::render(&report)
    };
    super::write_stdout(&text)?;
    verdict
}

/// The report, serialised as is for `--json`.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// True when a launch with the same options would start the command.
    ok: bool,
    exit_code: u8,
    error: Option<ErrorReport>,
    region: Option<RegionReport>,
    /// The Parameter Store endpoint.
    endpoint: Option<String>,
    credentials: Option<CredentialsReport>,
    identity: Option<CallerIdentity>,
    identity_error: Option<String>,
    paths: Vec<String>,
    parameters: Vec<ParameterReport>,
    /// The DescribeParameters failure that left out key ids, tiers and dates.
    metadata_error: Option<String>,
    decryption: DecryptionReport,
    required: Vec<RequiredReport>,
    collisions: Vec<CollisionReport>,
    invalid_names: Vec<InvalidNameReport>,
    /// Variables already set in this environment that a launch would replace.
    environment_overrides: Vec<String>,
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ErrorReport {
    message: String,
    hint: Option<String>,
}

#[derive(Debug, Serialize)]
struct RegionReport {
    name: String,
    source: String,
}

#[derive(Debug, Serialize)]
struct CredentialsReport {
    /// The SDK provider that supplied them, such as EnvironmentVariable or ProfileFile.
    source: String,
    profile: Option<String>,
    /// The access key id with all but its last four characters masked.
    access_key_id: String,
    temporary: bool,
    expires: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct ParameterReport {
    name: String,
    /// The path it was found under.
    path: String,
    variable: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    key_id: Option<String>,
    version: Option<i64>,
    last_modified: Option<String>,
    tier: Option<String>,
    /// Length of the decrypted value in bytes. The value itself is never reported.
    value_length: Option<usize>,
    /// Whether the value could be decrypted, for SecureString parameters.
    decrypted: Option<bool>,
    /// The parameter from a later path that replaces this one's variable.
    replaced_by: Option<String>,
    warnings: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct DecryptionReport {
    /// `ok`, `failed`, `not_needed` or `unknown`.
    status: &'static str,
    detail: Option<String>,
}

#[derive(Debug, Serialize)]
struct RequiredReport {
    variable: String,
    found: bool,
    parameter: Option<String>,
    expected_parameter: Option<String>,
}

#[derive(Debug, Serialize)]
struct CollisionReport {
    path: String,
    variable: String,
    parameters: Vec<String>,
}

#[derive(Debug, Serialize)]
struct InvalidNameReport {
    parameter: String,
    variable: String,
}

impl Report {
    fn finish(&mut self, error: Option<&Error>) {
        self.ok = error.is_none();
        self.exit_code = error.map_or(0, |e| e.exit_code().code());
        self.error = error.map(|e| ErrorReport {
            message: sanitize(&e.to_string()),
            hint: e.hint().map(|h| sanitize(&h)),
        });
    }
}

/// Runs every step and fills in `report`. Returns the error a launch would stop at.
async fn inspect(config: &Config, report: &mut Report) -> Result<(), Error> {
    report.paths = config.paths.clone();
    report.decryption.status = "unknown";

    let aws = aws::configure(config).await?;
    report.region = Some(RegionReport {
        name: aws.region.clone(),
        source: aws.region_source.to_string(),
    });
    report.endpoint = Some(
        aws.endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://ssm.{}.amazonaws.com", aws.region)),
    );

    let credentials = aws::resolve_credentials(&aws).await?;
    report.credentials = Some(describe_credentials(&credentials, config).await);
    match identity::caller_identity(&aws, credentials.clone()).await {
        Ok(identity) => report.identity = Some(identity),
        Err(detail) => report.identity_error = Some(detail),
    }

    let client = ssm::client(&aws, credentials);
    let mut metadata = describe_paths(config, &aws, &client).await;
    let loaded = load::load_with(config, &aws, &client).await;

    let (paths, maps, load_error) = match loaded {
        Ok(loaded) => (Some(loaded.paths), loaded.maps, None),
        Err(error) => (None, Vec::new(), Some(error)),
    };
    if let (Err(detail), Some(_)) = (&metadata, &load_error) {
        // Neither call listed the parameters: list them without decrypting, so the report
        // still names them and their types.
        report.metadata_error = Some(metadata_hint(detail));
        metadata = list_without_decryption(config, &aws, &client).await;
    }
    fill_parameters(report, config, metadata, paths.as_deref());
    fill_maps(report, &maps);
    fill_decryption(report, paths.as_deref(), &maps, load_error.as_ref());
    if load_error.as_ref().is_some_and(is_kms_denial) {
        probe_decryption(report, &client).await;
    }
    collect_warnings(report);
    fill_mapping(report, config);
    if let Some(error) = load_error {
        return Err(error);
    }

    let loaded = load::Loaded {
        paths: paths.unwrap_or_default(),
        maps,
        requests: 0,
    };
    load::select(config, loaded).map(drop)
}

async fn describe_credentials(credentials: &SharedCredentialsProvider, config: &Config) -> CredentialsReport {
    // The provider hands out the credentials resolved a moment ago; no request is sent.
    let resolved = credentials.provide_credentials().await.ok();
    let source = resolved
        .as_ref()
        .and_then(|c| provider_name(&format!("{c:?}")))
        .unwrap_or_else(|| "unknown".into());
    let access_key_id = resolved.as_ref().map(|c| mask(c.access_key_id())).unwrap_or_default();
    CredentialsReport {
        source,
        profile: config.profile.clone(),
        access_key_id,
        temporary: resolved.as_ref().is_some_and(|c| c.session_token().is_some()),
        expires: resolved
            .as_ref()
            .and_then(|c| c.expiry())
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
    }
}

/// Extracts the provider name from the credentials' Debug text, which redacts the secret
/// key. The SDK offers no getter for the provider name.
fn provider_name(debug: &str) -> Option<String> {
    let start = debug.find("provider_name: \"")? + "provider_name: \"".len();
    let end = debug[start..].find('"')? + start;
    Some(debug[start..end].to_string())
}

/// Masks all but the last four characters, as `aws configure list` does.
fn mask(access_key_id: &str) -> String {
    let chars: Vec<char> = access_key_id.chars().collect();
    let visible: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("****{visible}")
}

/// Metadata of every parameter under the paths, from DescribeParameters.
type Metadata = Result<Vec<(String, Vec<ParameterMetadata>)>, String>;

async fn describe_paths(config: &Config, aws: &Aws, client: &aws_sdk_ssm::Client) -> Metadata {
    let mut all = Vec::new();
    for path in &config.paths {
        let filter = ParameterStringFilter::builder()
            .key("Path")
            .option("Recursive")
            .values(path)
            .build()
            .map_err(|e| e.to_string())?;
        let mut parameters = Vec::new();
        let mut next_token = None;
        for _ in 0..MAX_DESCRIBE_PAGES {
            let page = client
                .describe_parameters()
                .parameter_filters(filter.clone())
                .max_results(50)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| {
                    let error = ssm::classify(e, "DescribeParameters", "ssm:DescribeParameters", path, aws, &[]);
                    sanitize(&error.to_string())
                })?;
            parameters.extend(page.parameters.unwrap_or_default());
            match page.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => break,
            }
        }
        all.push((path.clone(), parameters));
    }
    Ok(all)
}

/// Lists every parameter found by either call, with metadata and value lengths.
fn fill_parameters(report: &mut Report, config: &Config, metadata: Metadata, loaded: Option<&[(String, Vec<Parameter>)]>) {
    let metadata = match metadata {
        Ok(found) => Some(found),
        Err(detail) => {
            if report.metadata_error.is_none() {
                report.metadata_error = Some(metadata_hint(&detail));
            }
            None
        }
    };

    for path in &config.paths {
        let mut rows: BTreeMap<String, ParameterReport> = BTreeMap::new();
        let described = metadata
            .iter()
            .flatten()
            .filter(|(p, _)| p == path)
            .flat_map(|(_, list)| list);
        for item in described {
            let name = item.name.clone().unwrap_or_default();
            let row = rows.entry(name.clone()).or_insert_with(|| new_row(path, &name));
            row.kind = item.r#type.as_ref().map(|t| t.as_str().to_string());
            row.key_id = item.key_id.clone();
            row.version = Some(item.version);
            row.tier = item.tier.as_ref().map(|t| t.as_str().to_string());
            // Whole seconds: the fraction AWS sends adds nothing for an operator.
            row.last_modified = item
                .last_modified_date
                .and_then(|d| DateTime::from_secs(d.secs()).fmt(DateTimeFormat::DateTime).ok());
        }
        let values = loaded
            .into_iter()
            .flatten()
            .filter(|(p, _)| p == path)
            .flat_map(|(_, list)| list);
        for parameter in values {
            let row = rows
                .entry(parameter.name.clone())
                .or_insert_with(|| new_row(path, &parameter.name));
            row.kind = Some(parameter.kind.clone());
            row.version = Some(parameter.version);
            row.decrypted = (parameter.kind == "SecureString").then_some(true);
            let value = parameter.value.expose_secret();
            row.value_length = Some(value.len());
            if value.is_empty() {
                row.warnings.push("the value is empty".into());
            } else if value.trim() != value {
                row.warnings.push("the value starts or ends with whitespace or a newline".into());
            }
        }
        for row in rows.values_mut() {
            if row.kind.as_deref().is_some_and(|k| k != "SecureString") {
                row.warnings.push(format!(
                    "type is {}, not SecureString: the value is stored unencrypted",
                    row.kind.as_deref().unwrap_or_default()
                ));
            }
        }
        report.parameters.extend(rows.into_values());
    }
}

/// Copies every parameter's warnings into the report's list, prefixed with the name.
fn collect_warnings(report: &mut Report) {
    for row in &report.parameters {
        for warning in &row.warnings {
            report.warnings.push(format!("{}: {warning}", row.name));
        }
    }
}

fn metadata_hint(detail: &str) -> String {
    format!(
        "{detail}. KMS key ids and tiers are not shown ('qlarius-env policy --check' grants \
         ssm:DescribeParameters)"
    )
}

/// Lists the parameters under every path with GetParametersByPath and no decryption, in
/// the shape DescribeParameters returns (without key ids), for when the launch's own
/// decrypting read failed.
async fn list_without_decryption(config: &Config, aws: &Aws, client: &aws_sdk_ssm::Client) -> Metadata {
    let mut all = Vec::new();
    for path in &config.paths {
        let mut parameters = Vec::new();
        let mut next_token = None;
        for _ in 0..MAX_DESCRIBE_PAGES {
            let page = client
                .get_parameters_by_path()
                .path(path)
                .recursive(true)
                .with_decryption(false)
                .max_results(10)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| {
                    let error = ssm::classify(e, "GetParametersByPath", "ssm:GetParametersByPath", path, aws, &[]);
                    sanitize(&error.to_string())
                })?;
            for parameter in page.parameters.unwrap_or_default() {
                parameters.push(
                    ParameterMetadata::builder()
                        .set_name(parameter.name)
                        .set_type(parameter.r#type)
                        .version(parameter.version)
                        .set_last_modified_date(parameter.last_modified_date)
                        .build(),
                );
            }
            match page.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => break,
            }
        }
        all.push((path.clone(), parameters));
    }
    Ok(all)
}

/// Maximum number of SecureString parameters decrypted one by one after a failure.
const MAX_DECRYPTION_PROBES: usize = 50;

/// Decrypts each SecureString parameter on its own with GetParameters (the action the
/// least-privilege policy grants), to name the ones whose KMS key the caller cannot use.
/// The values are only measured, then dropped.
async fn probe_decryption(report: &mut Report, client: &aws_sdk_ssm::Client) {
    let secure = report
        .parameters
        .iter_mut()
        .filter(|row| row.kind.as_deref() == Some("SecureString"))
        .take(MAX_DECRYPTION_PROBES);
    for row in secure {
        let result = client
            .get_parameters()
            .names(&row.name)
            .with_decryption(true)
            .send()
            .await;
        match result {
            Ok(output) => {
                let value = output.parameters.unwrap_or_default().into_iter().next().and_then(|p| p.value);
                row.decrypted = Some(value.is_some());
                row.value_length = value.map(|v| secrecy::SecretString::from(v).expose_secret().len());
            }
            Err(error) => {
                row.decrypted = Some(false);
                let code = error.code().unwrap_or("request failed").to_string();
                row.warnings.push(format!("decryption failed: {}", sanitize(&code)));
            }
        }
    }
}

fn new_row(path: &str, name: &str) -> ParameterReport {
    ParameterReport {
        name: name.to_string(),
        path: path.to_string(),
        ..ParameterReport::default()
    }
}

/// Rows under the pseudo-path `--map`: one for each `--map`, named by its request (the
/// parameter name with any selector), with the variable it sets.
fn fill_maps(report: &mut Report, maps: &[(MapSpec, Parameter)]) {
    if maps.is_empty() {
        return;
    }
    report.paths.push(MAP_GROUP.into());
    for (map, parameter) in maps {
        let mut row = new_row(MAP_GROUP, &map.request);
        row.variable = Some(map.variable.clone());
        row.kind = Some(parameter.kind.clone());
        row.version = Some(parameter.version);
        row.decrypted = (parameter.kind == "SecureString").then_some(true);
        row.value_length = Some(parameter.value.expose_secret().len());
        report.parameters.push(row);
    }
}

/// The group name under which `--map` parameters are reported.
const MAP_GROUP: &str = "--map";

fn fill_decryption(
    report: &mut Report,
    loaded: Option<&[(String, Vec<Parameter>)]>,
    maps: &[(MapSpec, Parameter)],
    error: Option<&Error>,
) {
    report.decryption = match (loaded, error) {
        (Some(paths), _) => {
            let count = paths
                .iter()
                .flat_map(|(_, list)| list)
                .chain(maps.iter().map(|(_, parameter)| parameter))
                .filter(|p| p.kind == "SecureString")
                .count();
            if count == 0 {
                DecryptionReport {
                    status: "not_needed",
                    detail: Some("no SecureString parameters".into()),
                }
            } else {
                DecryptionReport {
                    status: "ok",
                    detail: Some(format!("{count} SecureString parameter{} decrypted", if count == 1 { "" } else { "s" })),
                }
            }
        }
        (None, Some(error)) if is_kms_denial(error) => DecryptionReport {
            status: "failed",
            detail: Some(sanitize(&error.to_string())),
        },
        (None, _) => DecryptionReport {
            status: "unknown",
            detail: Some("the parameters could not be read".into()),
        },
    };
}

fn is_kms_denial(error: &Error) -> bool {
    matches!(error, Error::Aws(e) if e.class == AwsErrorClass::KmsDenied)
}

/// Maps names to variables as a launch does, but reports every collision and invalid
/// name instead of stopping at the first, then checks the required variables.
fn fill_mapping(report: &mut Report, config: &Config) {
    // Variable -> parameter, after later paths replace earlier ones.
    let mut layered: BTreeMap<String, String> = BTreeMap::new();
    for path in &config.paths {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in report.parameters.iter_mut().filter(|r| &r.path == path) {
            match mapping::variable_name(path, &row.name, config.preserve_case) {
                Ok(variable) => {
                    row.variable = Some(variable.clone());
                    groups.entry(variable).or_default().push(row.name.clone());
                }
                Err(Error::InvalidName { variable, .. }) => {
                    report.invalid_names.push(InvalidNameReport {
                        parameter: row.name.clone(),
                        variable,
                    });
                }
                Err(_) => {}
            }
        }
        for (variable, parameters) in groups {
            if parameters.len() > 1 {
                report.collisions.push(CollisionReport {
                    path: path.clone(),
                    variable,
                    parameters,
                });
            } else if let Some(earlier) = layered.insert(variable, parameters[0].clone()) {
                if let Some(row) = report.parameters.iter_mut().find(|r| r.name == earlier && &r.path != path) {
                    row.replaced_by = Some(parameters[0].clone());
                }
            }
        }
    }

    // A map replaces whatever a path set for its variable.
    for row in report.parameters.iter().filter(|r| r.path == MAP_GROUP) {
        if let Some(variable) = &row.variable {
            layered.insert(variable.clone(), row.name.clone());
        }
    }

    report.environment_overrides = layered
        .keys()
        .filter(|name| std::env::var_os(name).is_some())
        .cloned()
        .collect();

    for variable in &config.required {
        let parameter = layered.get(variable).cloned();
        let expected_parameter = config
            .known_parameters
            .iter()
            .find(|(v, _)| v == variable)
            .map(|(_, p)| p.clone());
        report.required.push(RequiredReport {
            variable: variable.clone(),
            found: parameter.is_some(),
            parameter,
            expected_parameter,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_name_from_debug_text() {
        let debug = r#"Credentials { provider_name: "EnvironmentVariable", access_key_id: "AKID", secret_access_key: "** redacted **" }"#;
        assert_eq!(provider_name(debug).as_deref(), Some("EnvironmentVariable"));
        assert_eq!(provider_name("nothing"), None);
    }

    #[test]
    fn access_key_is_masked() {
        assert_eq!(mask("AKIDTESTONLY"), "****ONLY");
        assert_eq!(mask("AB"), "****AB");
    }
}
