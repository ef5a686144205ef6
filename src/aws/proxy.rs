//! Proxy settings from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY.
//!
//! The variables are read here, not by the HTTP stack, so that the credential endpoints
//! on the instance (metadata service, container credentials) are always in the no-proxy
//! rules. A proxy outside the instance cannot reach them, and must not see the requests
//! that return the instance's credentials.

use crate::error::Error;
use aws_smithy_http_client::proxy::ProxyConfig;

/// Addresses of the EC2 instance metadata service and the ECS and EKS container
/// credential endpoints, in IPv4 and IPv6.
const CREDENTIAL_ENDPOINTS: &str =
    "169.254.169.254,169.254.170.2,169.254.170.23,fd00:ec2::254,fd00:ec2::23";

/// Variables whose URL names a credential endpoint that is not proxied either.
const CREDENTIAL_ENDPOINT_VARIABLES: [&str; 2] =
    ["AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_CONTAINER_CREDENTIALS_FULL_URI"];

/// The proxies for each URL scheme and the hosts that bypass them.
#[derive(Clone)]
pub struct ProxySettings {
    https: Option<ProxyUrl>,
    http: Option<ProxyUrl>,
    no_proxy: String,
}

/// A proxy URL and the variable it came from. The URL may contain a password, so it is
/// only ever shown through [`ProxyUrl::redacted`].
#[derive(Clone)]
struct ProxyUrl {
    variable: &'static str,
    url: String,
}

impl ProxyUrl {
    /// Returns the URL with any password replaced by `***`.
    fn redacted(&self) -> String {
        redact_userinfo(&self.url)
    }
}

impl ProxySettings {
    /// Reads the proxy variables. Upper case wins over lower case, as in curl and the
    /// AWS CLI; ALL_PROXY applies to a scheme without its own variable.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<ProxySettings, Error> {
        let first = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v)))
        };
        let all = first(["ALL_PROXY", "all_proxy"]);
        let https = first(["HTTPS_PROXY", "https_proxy"]).or_else(|| all.clone());
        let http = first(["HTTP_PROXY", "http_proxy"]).or(all);

        let mut no_proxy: Vec<String> = first(["NO_PROXY", "no_proxy"])
            .map(|(_, rules)| rules.split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect())
            .unwrap_or_default();
        no_proxy.extend(CREDENTIAL_ENDPOINTS.split(',').map(str::to_string));
        for name in CREDENTIAL_ENDPOINT_VARIABLES {
            if let Some(host) = env(name).as_deref().and_then(url_host) {
                no_proxy.push(host);
            }
        }

        Ok(ProxySettings {
            https: https.map(ensure_proxy_url).transpose()?,
            http: http.map(ensure_proxy_url).transpose()?,
            no_proxy: no_proxy.join(","),
        })
    }

    /// Returns the proxy configuration for a client that sends HTTPS requests (`tls`) or
    /// plain HTTP requests. Each client serves one scheme because the SDK's HTTP connector
    /// takes a single proxy configuration.
    ///
    /// NOTE: an `http://` STS or SSO endpoint (an emulator) is reached through the HTTPS
    /// client, so HTTP_PROXY does not apply to it.
    pub fn for_scheme(&self, tls: bool) -> ProxyConfig {
        let chosen = if tls { &self.https } else { &self.http };
        let Some(proxy) = chosen else {
            return ProxyConfig::disabled();
        };
        let config = if tls {
            ProxyConfig::https(proxy.url.as_str())
        } else {
            ProxyConfig::http(proxy.url.as_str())
        };
        // `ensure_proxy_url` ran the same check on this URL, so this cannot fail.
        config
            .map(|c| c.no_proxy(&self.no_proxy))
            .unwrap_or_else(|_| ProxyConfig::disabled())
    }

    /// Describes the proxies for the debug log, without passwords.
    pub fn describe(&self) -> String {
        let show = |p: &Option<ProxyUrl>| match p {
            Some(p) => format!("{} from {}", p.redacted(), p.variable),
            None => "none".into(),
        };
        format!(
            "https proxy {}, http proxy {}, no proxy for {}",
            show(&self.https),
            show(&self.http),
            self.no_proxy
        )
    }
}

/// Checks a proxy URL and adds `http://` when the scheme is missing, as curl does.
fn ensure_proxy_url((variable, url): (&'static str, String)) -> Result<ProxyUrl, Error> {
    let url = url.trim();
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    match ProxyConfig::http(url.as_str()) {
        Ok(_) => Ok(ProxyUrl { variable, url }),
        Err(e) => Err(Error::Usage(format!(
            "invalid {variable} {}: {e}",
            redact_userinfo(&url)
        ))),
    }
}

/// Replaces the password in `scheme://user:password@host` with `***`.
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// Returns the host of an `http://` or `https://` URL, without brackets around an IPv6
/// address.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<ProxySettings, Error> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        ProxySettings::from_env(|name| vars.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn upper_case_wins_and_all_proxy_fills_in() {
        let s = settings(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("all_proxy", "http://all:3128"),
        ])
        .unwrap();
        assert_eq!(s.https.unwrap().url, "http://upper:3128");
        assert_eq!(s.http.unwrap().url, "http://all:3128");
        let s = settings(&[("https_proxy", "lower:3128")]).unwrap();
        assert_eq!(s.https.unwrap().url, "http://lower:3128");
    }

    #[test]
    fn credential_endpoints_are_never_proxied() {
        let s = settings(&[
            ("NO_PROXY", "example.internal, .corp"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:4242/"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://[fd00:ec2::23]/v1/credentials"),
        ])
        .unwrap();
        let rules: Vec<&str> = s.no_proxy.split(',').collect();
        for expected in ["example.internal", ".corp", "169.254.169.254", "169.254.170.2", "127.0.0.1", "fd00:ec2::23"] {
            assert!(rules.contains(&expected), "{expected} missing from {rules:?}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_userinfo("http://user:s3cret@proxy:3128/x"),
            "http://user:***@proxy:3128/x"
        );
        assert_eq!(redact_userinfo("http://proxy:3128"), "http://proxy:3128");
        let s = settings(&[("HTTPS_PROXY", "http://user:s3cret@proxy:3128")]).unwrap();
        assert!(!s.describe().contains("s3cret"), "{}", s.describe());
    }

    #[test]
    fn invalid_proxy_url_hides_password() {
        let error = settings(&[("HTTPS_PROXY", "ftp://user:s3cret@proxy:21")]).err().unwrap();
        let text = error.to_string();
        assert!(text.contains("HTTPS_PROXY"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
