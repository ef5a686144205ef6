//! Credentials: the SDK's default sources, tried in the SDK's order, with a record of
//! what each one returned.
//!
//! The SDK's own chain reports the other sources' results only in its debug log. This
//! chain names every source it tried with the error each returned. It also bounds the
//! whole search by the start-up budget and names the source it was waiting on when the
//! budget ran out.

use crate::error::{Error, ExitCode};
use crate::ssm::error_chain;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The default IMDS endpoint, used in messages when AWS_EC2_METADATA_SERVICE_ENDPOINT is
/// not set.
const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The SDK's message for a source that is not configured, followed by the reason, if any.
const NOT_ENABLED: &str = "the credential provider was not enabled";
/// The ECS agent's endpoint for AWS_CONTAINER_CREDENTIALS_RELATIVE_URI.
const ECS_RELATIVE_BASE: &str = "http://169.254.170.2";

const IMDS_HINT: &str = "the instance metadata service did not answer. In a container on EC2 \
    the IMDSv2 token response needs a second network hop: raise the instance's hop limit \
    to 2 (aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2), run \
    the container with host networking, or give the task or pod its own role (ECS task \
    role, EKS IRSA or Pod Identity)";

/// One credential source of the default chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Environment,
    Profile,
    WebIdentity,
    Container,
    InstanceMetadata,
}

/// The credential sources in the order the SDK's default chain tries them.
pub struct CredentialChain {
    sources: Vec<(Source, Box<dyn ProvideCredentials>)>,
    profile: String,
    /// The profile was named with --profile and is the only source.
    explicit_profile: bool,
}

impl std::fmt::Debug for CredentialChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<Source> = self.sources.iter().map(|(s, _)| *s).collect();
        f.debug_struct("CredentialChain").field("sources", &names).finish()
    }
}

impl CredentialChain {
    /// Builds the chain. `remote` reaches STS and the SSO portal, through the proxy if
    /// one is set. `local` reaches the container and instance metadata endpoints and never
    /// uses a proxy. With `explicit_profile` (--profile), the named profile is the only
    /// source, as in the AWS CLI: neither keys in the environment nor an instance role can
    /// stand in for it silently.
    pub fn new(
        remote: &ProviderConfig,
        local: &ProviderConfig,
        profile: Option<&str>,
        explicit_profile: bool,
    ) -> CredentialChain {
        warn_about_empty_keys();

        let mut profile_provider = ProfileFileCredentialsProvider::builder().configure(remote);
        if let Some(name) = profile {
            profile_provider = profile_provider.profile_name(name);
        }
        let mut sources: Vec<(Source, Box<dyn ProvideCredentials>)> = vec![
            (Source::Environment, Box::new(EnvironmentVariableCredentialsProvider::new())),
            (Source::Profile, Box::new(profile_provider.build())),
            (
                Source::WebIdentity,
                Box::new(WebIdentityTokenCredentialsProvider::builder().configure(remote).build()),
            ),
            (
                Source::Container,
                Box::new(EcsCredentialsProvider::builder().configure(local).build()),
            ),
            (
                Source::InstanceMetadata,
                Box::new(ImdsCredentialsProvider::builder().configure(local).build()),
            ),
        ];
        if explicit_profile {
            sources.retain(|(source, _)| *source == Source::Profile);
            if env_set("AWS_ACCESS_KEY_ID").is_some() {
                tracing::info!(
                    "using profile {} from --profile; AWS_ACCESS_KEY_ID in the environment is ignored",
                    profile.unwrap_or_default()
                );
            }
        }
        CredentialChain {
            sources,
            profile: profile
                .map(str::to_string)
                .or_else(|| env_set("AWS_PROFILE"))
                .unwrap_or_else(|| "default".into()),
            explicit_profile,
        }
    }

    /// Tries each source in turn until one returns credentials, giving up at `deadline`.
    /// `budget` is the whole start-up budget, named in the error when it runs out.
    pub async fn resolve(&self, deadline: Instant, budget: Duration) -> Result<Credentials, Error> {
        let mut tried: Vec<String> = Vec::new();
        for (source, provider) in &self.sources {
            tracing::debug!("trying {}", self.describe(*source));
            let result = match tokio::time::timeout_at(deadline, provider.provide_credentials()).await {
                Ok(result) => result,
                Err(_) => return Err(self.timed_out(*source, budget)),
            };
            match result {
                Ok(credentials) => {
                    tracing::debug!(expires = ?credentials.expiry(), "loaded AWS credentials from {}", self.describe(*source));
                    return Ok(credentials);
                }
                Err(CredentialsError::CredentialsNotLoaded(context)) => {
                    let said = self.not_loaded_reason(*source, &CredentialsError::CredentialsNotLoaded(context));
                    tried.push(format!("{} ({said})", self.describe(*source)));
                }
                Err(error) => return Err(self.failed(*source, error, &tried)),
            }
        }
        if self.explicit_profile {
            return Err(Error::Credentials {
                detail: format!("--profile {}: {}", self.profile, tried.join("; ")),
                code: ExitCode::Config,
                hint: Some(
                    "check the profile's name in the shared config and credentials files \
                     (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE); with --profile no other \
                     credential source is tried"
                        .into(),
                ),
            });
        }
        Err(self.nothing_found(tried))
    }

    /// Names a source as an operator knows it.
    fn describe(&self, source: Source) -> String {
        match source {
            Source::Environment => "environment variables".into(),
            Source::Profile => format!("profile {}", self.profile),
            Source::WebIdentity => "web identity".into(),
            Source::Container => match container_endpoint() {
                Some(url) => format!("container credentials at {url}"),
                None => "container credentials".into(),
            },
            Source::InstanceMetadata if imds_disabled() => "instance metadata".into(),
            Source::InstanceMetadata => format!("instance metadata at {}", imds_endpoint()),
        }
    }

    /// Explains why a source returned no credentials. The environment and web identity
    /// providers return only "not set", so the variables are named here instead.
    fn not_loaded_reason(&self, source: Source, error: &CredentialsError) -> String {
        let set = |name: &str| env_set(name).is_some();
        match source {
            Source::Environment if !set("AWS_ACCESS_KEY_ID") => "AWS_ACCESS_KEY_ID not set".into(),
            Source::Environment => "AWS_SECRET_ACCESS_KEY not set".into(),
            Source::WebIdentity if !set("AWS_WEB_IDENTITY_TOKEN_FILE") => {
                "AWS_WEB_IDENTITY_TOKEN_FILE not set".into()
            }
            Source::WebIdentity if !set("AWS_ROLE_ARN") => "AWS_ROLE_ARN not set".into(),
            Source::InstanceMetadata if imds_disabled() => "disabled by AWS_EC2_METADATA_DISABLED".into(),
            Source::Container if container_endpoint().is_none() => {
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI not set".into()
            }
            _ => {
                let said = one_line(&error_chain(error));
                match said.strip_prefix(NOT_ENABLED) {
                    Some("") => "not configured".into(),
                    Some(rest) => rest.trim_start_matches(':').trim().to_string(),
                    None => said,
                }
            }
        }
    }

    fn timed_out(&self, source: Source, budget: Duration) -> Error {
        let detail = format!(
            "timed out after {} waiting for {}",
            humantime::format_duration(budget),
            self.describe(source)
        );
        let hint = match source {
            Source::InstanceMetadata => IMDS_HINT.to_string(),
            Source::Container => "check that the container credentials endpoint is reachable from \
                the container; raise --timeout on a slow network"
                .into(),
            _ => "check that STS and the SSO portal are reachable (HTTPS_PROXY, NO_PROXY, VPC \
                endpoints); raise --timeout on a slow network"
                .into(),
        };
        Error::Credentials {
            detail,
            code: ExitCode::TempFail,
            hint: Some(hint),
        }
    }

    fn failed(&self, source: Source, error: CredentialsError, tried: &[String]) -> Error {
        let said = without_generic_prefix(&one_line(&error_chain(&error)));
        let token_file = env_set("AWS_WEB_IDENTITY_TOKEN_FILE").filter(|_| source == Source::WebIdentity);
        let unreadable_token = token_file.is_some() && said.contains("os error");
        let mut detail = match &token_file {
            Some(file) if unreadable_token => format!("{}: cannot read token file {file}: {said}", self.describe(source)),
            Some(file) if !said.contains(file.as_str()) => {
                format!("{}: {said} (token file {file})", self.describe(source))
            }
            _ => format!("{}: {said}", self.describe(source)),
        };
        if !tried.is_empty() {
            detail.push_str(&format!("; before it: {}", tried.join("; ")));
        }

        let lower = detail.to_ascii_lowercase();
        let (code, hint) = match &error {
            CredentialsError::ProviderTimedOut(_) => (ExitCode::TempFail, Some(self.timeout_hint(source))),
            CredentialsError::InvalidConfiguration(_) => (ExitCode::Config, None),
            _ if unreadable_token => (
                ExitCode::Config,
                Some("AWS_WEB_IDENTITY_TOKEN_FILE must name a file this user can read; on EKS, \
                      check the service account's token volume"
                    .into()),
            ),
            _ if source == Source::InstanceMetadata && is_unreachable(&lower) => {
                (ExitCode::TempFail, Some(IMDS_HINT.to_string()))
            }
            _ if lower.contains("timeout") || lower.contains("timed out") => {
                (ExitCode::TempFail, Some(self.timeout_hint(source)))
            }
            _ if source == Source::Container && is_unreachable(&lower) => (
                ExitCode::Unavailable,
                Some("check that the container credentials endpoint is reachable from the container".into()),
            ),
            _ if is_unreachable(&lower) => (
                ExitCode::Unavailable,
                Some("check that STS and the SSO portal are reachable (HTTPS_PROXY, NO_PROXY, VPC \
                      endpoints)"
                    .into()),
            ),
            _ if lower.contains("sso") || lower.contains("expired") => (
                ExitCode::NoPermission,
                Some(format!(
                    "the SSO session or its token has expired: run 'aws sso login --profile {}', \
                     then start again",
                    self.profile
                )),
            ),
            _ => (
                ExitCode::NoPermission,
                Some(format!(
                    "{} is configured but returned an error; run with -v for each step",
                    self.describe(source)
                )),
            ),
        };
        Error::Credentials { detail, code, hint }
    }

    fn timeout_hint(&self, source: Source) -> String {
        match source {
            Source::InstanceMetadata => IMDS_HINT.to_string(),
            Source::Container => "check that the container credentials endpoint answers from \
                the container; raise --timeout on a slow network"
                .into(),
            _ => "check that STS and the SSO portal are reachable (HTTPS_PROXY, NO_PROXY, VPC \
                endpoints); raise --timeout on a slow network"
                .into(),
        }
    }

    fn nothing_found(&self, tried: Vec<String>) -> Error {
        // A metadata service that timed out is the likely cause in a container on EC2,
        // so it gets the hop-limit hint instead of the generic one.
        let imds_silent = tried
            .last()
            .is_some_and(|t| t.starts_with("instance metadata") && is_unreachable(&t.to_ascii_lowercase()));
        if imds_silent {
            return Error::Credentials {
                detail: format!("no source returned credentials: {}", tried.join("; ")),
                code: ExitCode::TempFail,
                hint: Some(IMDS_HINT.to_string()),
            };
        }
        Error::NoCredentials {
            detail: tried.join("; "),
        }
    }
}

/// The chain as an SDK credentials provider, for a client that lives long enough to need
/// fresh credentials (the watch mode): the SDK's identity cache calls it again before the
/// credentials expire. Each call gets the whole start-up budget.
#[derive(Clone, Debug)]
pub struct ChainProvider {
    pub chain: Arc<CredentialChain>,
    pub budget: Duration,
}

impl ProvideCredentials for ChainProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let deadline = Instant::now() + self.budget;
            self.chain.resolve(deadline, self.budget).await.map_err(|error| match error {
                Error::NoCredentials { .. } => CredentialsError::not_loaded(error.to_string()),
                _ => CredentialsError::provider_error(error.to_string()),
            })
        })
    }
}

/// Logs the static-key variables that are set to an empty value. The SDK treats them as
/// unset, which is right, but an image that declares them empty usually meant to set
/// them, so the operator should hear about it.
fn warn_about_empty_keys() {
    let empty: Vec<&str> = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
        .into_iter()
        .filter(|name| std::env::var_os(name).is_some_and(|v| v.to_string_lossy().trim().is_empty()))
        .collect();
    if !empty.is_empty() {
        tracing::warn!(
            "{} {} set but empty; treating {} as unset and trying the other credential sources",
            empty.join(" and "),
            if empty.len() == 1 { "is" } else { "are" },
            if empty.len() == 1 { "it" } else { "them" }
        );
    }
}

fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn container_endpoint() -> Option<String> {
    env_set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .map(|relative| format!("{ECS_RELATIVE_BASE}{relative}"))
        .or_else(|| env_set("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
}

fn imds_disabled() -> bool {
    env_set("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn imds_endpoint() -> String {
    env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.into())
}

/// Removes the SDK's generic lead-in ("an error occurred while loading credentials: "),
/// which repeats what the error line already states.
fn without_generic_prefix(text: &str) -> String {
    ["an error occurred while loading credentials: ", "unexpected credentials error: "]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .unwrap_or(text)
        .to_string()
}

/// Returns whether an error text describes a connection that failed or timed out.
fn is_unreachable(lower: &str) -> bool {
    ["timeout", "timed out", "dispatch failure", "connection refused", "io error", "could not communicate"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// The SDK's chain errors span several lines; the error line must stay one line.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}
