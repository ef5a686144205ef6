//! AWS SDK set-up: region, credentials, HTTP client, timeouts, retries and user agent.
//!
//! Nothing here sends a request before the region is known, so a missing region fails at
//! once. Credentials are resolved once, explicitly, so that a failure names the
//! credential sources instead of surfacing as a generic dispatch error.

use crate::config::{Config, RegionSource};
use crate::error::{Error, ExitCode};
use aws_config::{AppName, BehaviorVersion, SdkConfig};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_http_client::{Connector, proxy::ProxyConfig};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_types::region::Region;
use base64::Engine;
use std::time::Duration;

/// Time allowed to open a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one attempt, from sending the request to the end of the response.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per request when neither AWS_MAX_ATTEMPTS nor AWS_RETRY_MODE is set.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// A configured SDK, ready to build service clients.
pub struct Aws {
    pub sdk_config: SdkConfig,
    pub region: String,
    pub region_source: RegionSource,
    /// The Parameter Store endpoint, or `None` for the region's AWS endpoint.
    pub endpoint_url: Option<String>,
    /// The HTTP client for Parameter Store: plain HTTP for an `http://` endpoint, so that
    /// no trust roots are parsed on a launch that never uses TLS.
    pub ssm_http_client: SharedHttpClient,
}

/// Resolves the region and builds the SDK configuration. Sends no request.
pub async fn configure(config: &Config) -> Result<Aws, Error> {
    let (region, region_source) = match &config.region {
        Some(found) => found.clone(),
        None => profile_region(config.profile.as_deref()).await?,
    };

    let https_client = http_client(true);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.clone()))
        .http_client(https_client.clone())
        .app_name(AppName::new(concat!("qlarius-env-", env!("CARGO_PKG_VERSION"))).expect("valid app name"))
        .timeout_config(timeout_config(config.timeout));
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_none() && std::env::var_os("AWS_RETRY_MODE").is_none() {
        loader = loader.retry_config(RetryConfig::standard().with_max_attempts(DEFAULT_MAX_ATTEMPTS));
    }
    let sdk_config = loader.load().await;

    let plain_http = config
        .endpoint_url
        .as_deref()
        .is_some_and(|url| url.starts_with("http://"));
    let ssm_http_client = if plain_http { http_client(false) } else { https_client };

    Ok(Aws {
        sdk_config,
        region,
        region_source,
        endpoint_url: config.endpoint_url.clone(),
        ssm_http_client,
    })
}

async fn profile_region(profile: Option<&str>) -> Result<(String, RegionSource), Error> {
    let mut builder = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(name) = profile {
        builder = builder.profile_name(name);
    }
    let provider = builder.build();
    let name = profile.unwrap_or("default").to_string();
    match aws_config::meta::region::ProvideRegion::region(&provider).await {
        Some(region) => Ok((region.to_string(), RegionSource::Profile(name))),
        None => Err(Error::NoRegion),
    }
}

fn timeout_config(budget: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(budget))
        .read_timeout(ATTEMPT_TIMEOUT.min(budget))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT.min(budget))
        .operation_timeout(budget)
        .build()
}

/// Builds an HTTP client that honours HTTPS_PROXY, HTTP_PROXY and NO_PROXY.
///
/// With `tls`, it trusts the Mozilla roots compiled into the binary (so it works in a
/// `FROM scratch` image) plus the PEM bundle named by `SSL_CERT_FILE`, if any. The trust
/// roots are parsed only when the first TLS connector is built.
fn http_client(tls: bool) -> SharedHttpClient {
    let client = aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut builder = Connector::builder().proxy_config(ProxyConfig::from_env());
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        if tls {
            builder
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
                .tls_context(tls_context())
                .build()
        } else {
            builder.build_http()
        }
    });
    SharedHttpClient::new(BuildOnFirstRequest(client))
}

/// An HTTP client that builds its connector when the first request needs it.
///
/// The SDK validates every client it is given by building a connector at once. For the
/// TLS client that means parsing every trust root, and the default credentials chain
/// builds an STS client on every launch, even when no credential source ever calls STS.
/// Skipping that eager check saved about 80% of a launch's instructions (measured with
/// callgrind against a loopback endpoint).
#[derive(Debug)]
struct BuildOnFirstRequest(SharedHttpClient);

impl HttpClient for BuildOnFirstRequest {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

fn tls_context() -> TlsContext {
    let mut store = TrustStore::empty().with_native_roots(false);
    store.add_pem_certificate(embedded_roots_pem());
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        match std::fs::read(&path) {
            Ok(pem) => {
                store.add_pem_certificate(pem);
            }
            Err(e) => tracing::warn!(
                "cannot read SSL_CERT_FILE {}: {e}; using the built-in trust roots only",
                std::path::Path::new(&path).display()
            ),
        }
    }
    TlsContext::builder()
        .with_trust_store(store)
        .build()
        .expect("a TLS context with a trust store always builds")
}

/// Encodes the compiled-in Mozilla root certificates as one PEM bundle, the form the
/// SDK's trust store accepts.
pub fn embedded_roots_pem() -> Vec<u8> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut pem = Vec::with_capacity(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() * 2048);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let encoded = engine.encode(cert.as_ref());
        for line in encoded.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

/// Resolves credentials through the SDK's default chain and returns a provider that
/// hands out exactly those, so that the SSM client does not resolve them a second time.
pub async fn resolve_credentials(aws: &Aws) -> Result<SharedCredentialsProvider, Error> {
    let provider = aws
        .sdk_config
        .credentials_provider()
        .ok_or_else(|| Error::Internal("the SDK configuration has no credentials provider".into()))?;
    match provider.provide_credentials().await {
        Ok(credentials) => {
            tracing::debug!(expires = ?credentials.expiry(), "loaded AWS credentials");
            Ok(SharedCredentialsProvider::new(credentials))
        }
        Err(error) => Err(credentials_error(error)),
    }
}

fn credentials_error(error: CredentialsError) -> Error {
    let detail = crate::ssm::error_chain(&error);
    match error {
        CredentialsError::CredentialsNotLoaded(_) => Error::NoCredentials {
            detail: credential_sources_tried(),
        },
        CredentialsError::ProviderTimedOut(_) => Error::Credentials {
            detail,
            code: ExitCode::TempFail,
            hint: Some(
                "a credential source did not answer in time; in a container on EC2 the \
                 instance metadata service may be out of reach (IMDSv2 hop limit 1): raise \
                 the hop limit to 2, use host networking, or give the task its own role"
                    .into(),
            ),
        },
        _ => {
            let lower = detail.to_ascii_lowercase();
            let hint = if lower.contains("sso") || lower.contains("token") && lower.contains("expired") {
                Some("the SSO session has expired or was never started: run 'aws sso login' with the same profile".into())
            } else {
                None
            };
            Error::Credentials {
                detail,
                code: ExitCode::NoPermission,
                hint,
            }
        }
    }
}

/// Lists the default chain's sources, in order, with what the environment says of each.
fn credential_sources_tried() -> String {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let mut sources = Vec::new();
    sources.push(if set("AWS_ACCESS_KEY_ID") {
        "environment variables (AWS_SECRET_ACCESS_KEY not set)".to_string()
    } else {
        "environment variables (AWS_ACCESS_KEY_ID not set)".to_string()
    });
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    sources.push(format!("profile {profile} in the shared config and credentials files"));
    sources.push(if set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        "web identity token".to_string()
    } else {
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE not set)".to_string()
    });
    sources.push(
        if set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") || set("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            "container credentials".to_string()
        } else {
            "container credentials (AWS_CONTAINER_CREDENTIALS_* not set)".to_string()
        },
    );
    let imds_disabled = std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    sources.push(if imds_disabled {
        "instance metadata (disabled by AWS_EC2_METADATA_DISABLED)".to_string()
    } else {
        "instance metadata (no answer)".to_string()
    });
    sources.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_roots_round_trip_through_pem() {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let pem = embedded_roots_pem();
        let parsed: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(parsed.len() > 100);
        assert_eq!(parsed[0].as_ref(), webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref());
    }

    #[test]
    fn timeouts_never_exceed_budget() {
        let config = timeout_config(Duration::from_secs(2));
        assert_eq!(config.connect_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(config.operation_timeout(), Some(Duration::from_secs(2)));
    }
}
