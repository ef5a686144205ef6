//! AWS SDK set-up: region, credentials, HTTP clients and proxies, timeouts, retries and
//! user agent.
//!
//! Nothing here sends a request before the region is known, so a missing region fails at
//! once. Credentials are resolved once, explicitly, so that a failure names the
//! credential sources instead of surfacing as a generic dispatch error.

mod credentials;
mod proxy;
mod retry;

pub use retry::RetryLog;

use crate::config::{Config, RegionSource};
use crate::error::Error;
use aws_config::provider_config::ProviderConfig;
use aws_config::{AppName, BehaviorVersion, SdkConfig};
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_http_client::{Connector, proxy::ProxyConfig};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_types::region::Region;
use base64::Engine;
use credentials::{ChainProvider, CredentialChain};
use std::sync::Arc;
use proxy::ProxySettings;
use std::time::Duration;

/// Maximum time to open a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Maximum time for one attempt, from sending the request to the end of the response.
/// A third of the budget is used instead when that is shorter, so that a stalled attempt
/// leaves time for two more.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

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
    credentials: Arc<CredentialChain>,
    budget: Duration,
}

/// Resolves the region and builds the SDK configuration. Sends no request.
pub async fn configure(config: &Config) -> Result<Aws, Error> {
    let (region, region_source) = match &config.region {
        Some(found) => found.clone(),
        None => profile_region(config.profile.as_deref()).await?,
    };
    let env = |name: &str| std::env::var(name).ok();
    let retry_config = retry::retry_config(env)?;
    let proxies = ProxySettings::from_env(env)?;
    tracing::debug!(
        "retry mode {:?}, {} attempts; {}",
        retry_config.mode(),
        retry_config.max_attempts(),
        proxies.describe()
    );

    let https_client = http_client(true, proxies.for_scheme(true));
    let timeouts = timeout_config(config.timeout);
    let remote = ProviderConfig::without_region()
        .with_region(Some(Region::new(region.clone())))
        .with_http_client(https_client.clone())
        .with_timeout_config(timeouts.clone());
    let local = ProviderConfig::without_region()
        .with_region(Some(Region::new(region.clone())))
        .with_http_client(http_client(local_endpoint_uses_tls(), ProxyConfig::disabled()));
    let credentials = Arc::new(CredentialChain::new(&remote, &local, config.profile.as_deref(), config.profile_from_flag));
    let refreshing = ChainProvider {
        chain: credentials.clone(),
        budget: config.timeout,
    };

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.clone()))
        .http_client(https_client.clone())
        .app_name(AppName::new(concat!("qlarius-env-", env!("CARGO_PKG_VERSION"))).expect("valid app name"))
        .timeout_config(timeouts)
        .retry_config(retry_config)
        // The same chain as `resolve_credentials`, for clients that refresh credentials;
        // it also keeps the loader from building a second default chain.
        .credentials_provider(SharedCredentialsProvider::new(refreshing));
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    let sdk_config = loader.load().await;

    let plain_http = config
        .endpoint_url
        .as_deref()
        .is_some_and(|url| url.starts_with("http://"));
    let ssm_http_client = if plain_http {
        http_client(false, proxies.for_scheme(false))
    } else {
        https_client
    };

    Ok(Aws {
        sdk_config,
        region,
        region_source,
        endpoint_url: config.endpoint_url.clone(),
        ssm_http_client,
        credentials,
        budget: config.timeout,
    })
}

/// Describes what a launch was waiting for when its budget ran out, with the cause of
/// the last failed attempt when requests were being retried.
pub fn describe_wait(stage: String) -> String {
    match retry::last_failure() {
        Some(reason) => format!("{stage} (the last attempt failed with {reason})"),
        None => stage,
    }
}

/// Waits a random time between zero and `max`, so that a fleet started at once spreads
/// its first requests.
pub async fn splay(max: Option<Duration>) {
    let Some(max) = max else { return };
    let delay = max.mul_f64(fastrand::f64());
    tracing::debug!("waiting {} ms (--splay {}) before the first request", delay.as_millis(), humantime::format_duration(max));
    tokio::time::sleep(delay).await;
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
    let attempt = ATTEMPT_TIMEOUT.min(budget / 3);
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(attempt))
        .read_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(budget)
        .build()
}

/// Returns whether the container credentials endpoint is an `https://` URL. The metadata
/// service and the ECS agent use plain HTTP, and only a full URI may use TLS.
fn local_endpoint_uses_tls() -> bool {
    std::env::var("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_ok_and(|url| url.starts_with("https://"))
}

/// Builds an HTTP client with the given proxy rules.
///
/// With `tls`, it trusts the Mozilla roots compiled into the binary (so it works in a
/// `FROM scratch` image) plus the PEM bundle named by `SSL_CERT_FILE`, if any. The trust
/// roots are parsed only when the first TLS connector is built.
fn http_client(tls: bool, proxy: ProxyConfig) -> SharedHttpClient {
    let client = aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut builder = Connector::builder().proxy_config(proxy.clone());
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

/// Resolves credentials once, within the start-up budget from now, and returns a
/// provider that hands out exactly those, so that the SSM client does not resolve them a
/// second time.
pub async fn resolve_credentials(aws: &Aws) -> Result<SharedCredentialsProvider, Error> {
    resolve_credentials_until(aws, tokio::time::Instant::now() + aws.budget).await
}

/// Resolves credentials like [`resolve_credentials`], giving up at `deadline`: the end
/// of a budget that also covers the requests after it.
pub async fn resolve_credentials_until(
    aws: &Aws,
    deadline: tokio::time::Instant,
) -> Result<SharedCredentialsProvider, Error> {
    let credentials = aws.credentials.resolve(deadline, aws.budget).await?;
    Ok(SharedCredentialsProvider::new(credentials))
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
        let config = timeout_config(Duration::from_secs(3));
        assert_eq!(config.connect_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(config.operation_attempt_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(config.operation_timeout(), Some(Duration::from_secs(3)));

        let config = timeout_config(Duration::from_secs(60));
        assert_eq!(config.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(config.read_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(config.operation_timeout(), Some(Duration::from_secs(60)));
    }
}
