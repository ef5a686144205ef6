//! Flags and environment merged into a validated configuration.

use crate::cli::SelectionArgs;
use crate::error::Error;
use crate::mapping::is_valid_variable;
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/qlarius";

/// The Qlarius variables required when no `--path` is given, with the parameter each
/// one comes from.
pub const QLARIUS_PARAMETERS: [(&str, &str); 4] = [
    ("TWILIO_ACCOUNT_SID", "/qlarius/twilio/account-sid"),
    ("TWILIO_AUTH_TOKEN", "/qlarius/twilio/auth-token"),
    ("TWILIO_VERIFY_SERVICE_SID", "/qlarius/twilio/verify-service-sid"),
    ("CLOAK_KEY", "/qlarius/cloak-key"),
];

/// Secrets Manager secrets are readable through Parameter Store under this prefix, but
/// only one at a time by name: GetParametersByPath does not list them.
const SECRETS_MANAGER_PREFIX: &str = "/aws/reference/secretsmanager";

/// The source of the region, reported in logs and errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionSource {
    Flag,
    Environment(&'static str),
    Profile(String),
}

impl std::fmt::Display for RegionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionSource::Flag => f.write_str("--region"),
            RegionSource::Environment(name) => f.write_str(name),
            RegionSource::Profile(name) => write!(f, "profile {name}"),
        }
    }
}

/// One `--map VAR=NAME[:SELECTOR]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub variable: String,
    /// The name as Parameter Store takes it in GetParameters, selector included.
    pub request: String,
    /// The parameter's name without the selector.
    pub name: String,
}

impl MapSpec {
    /// Secrets Manager references must be read one at a time with GetParameter.
    pub fn is_secrets_manager(&self) -> bool {
        self.name.starts_with(&format!("{SECRETS_MANAGER_PREFIX}/"))
    }
}

#[derive(Debug)]
pub struct Config {
    /// Normalised paths: a leading `/`, no trailing `/` (except the root itself).
    pub paths: Vec<String>,
    pub required: Vec<String>,
    /// Pairs of required variable and parameter name, used to say what is missing.
    pub known_parameters: Vec<(String, String)>,
    pub allow_empty: bool,
    pub maps: Vec<MapSpec>,
    pub label: Option<String>,
    pub preserve_case: bool,
    pub no_overwrite: bool,
    pub require_secure: bool,
    /// `--region`, `AWS_REGION` or `AWS_DEFAULT_REGION`; the profile's region is looked up
    /// later because it needs the config files.
    pub region: Option<(String, RegionSource)>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    /// The profile was named with --profile, which, as in the AWS CLI, also wins over
    /// credentials in environment variables; `AWS_PROFILE` does not.
    pub profile_from_flag: bool,
    pub timeout: Duration,
    /// The maximum random delay before the first request.
    pub splay: Option<Duration>,
}

impl Config {
    /// Validates the selection options. `env` looks up an environment variable, so tests
    /// can pass a map instead of the process environment.
    pub fn from_args(cli: SelectionArgs, env: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let maps = parse_maps(&cli.sources.maps)?;
        // With only maps, the default path stays out: the maps name what to load.
        let explicit_paths = !cli.sources.paths.is_empty() || !maps.is_empty();
        let raw_paths = if explicit_paths {
            cli.sources.paths
        } else {
            vec![DEFAULT_PATH.to_string()]
        };
        let paths = raw_paths
            .iter()
            .map(|p| normalize_path(p))
            .collect::<Result<Vec<_>, _>>()?;

        let (required, known_parameters) = if !cli.require.is_empty() {
            (ensure_variables(cli.require)?, Vec::new())
        } else if explicit_paths {
            (Vec::new(), Vec::new())
        } else {
            let known: Vec<(String, String)> = QLARIUS_PARAMETERS
                .iter()
                .map(|(v, p)| (v.to_string(), p.to_string()))
                .collect();
            (known.iter().map(|(v, _)| v.clone()).collect(), known)
        };

        let region = non_empty(cli.aws.region)
            .map(|r| (r, RegionSource::Flag))
            .or_else(|| {
                ["AWS_REGION", "AWS_DEFAULT_REGION"]
                    .into_iter()
                    .find_map(|name| non_empty(env(name)).map(|r| (r, RegionSource::Environment(name))))
            });
        if let Some((region, source)) = &region {
            ensure_region(region, source)?;
        }

        let label = non_empty(cli.label);
        if let Some(label) = &label {
            ensure_label(label)?;
        }

        let endpoint_url = resolve_endpoint(cli.aws.endpoint_url, &env)?;
        let profile_from_flag = non_empty(cli.aws.profile.clone()).is_some();
        let profile = non_empty(cli.aws.profile).or_else(|| non_empty(env("AWS_PROFILE")));

        Ok(Config {
            paths,
            required,
            known_parameters,
            allow_empty: cli.allow_empty,
            maps,
            label,
            preserve_case: cli.preserve_case,
            no_overwrite: cli.no_overwrite,
            require_secure: cli.require_secure,
            region,
            endpoint_url,
            profile,
            profile_from_flag,
            timeout: cli.aws.timeout,
            splay: cli.splay,
        })
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Checks a path and removes trailing slashes. Parameter names may contain only
/// `a-zA-Z0-9_.-/`, and a path must start with `/`.
pub fn normalize_path(path: &str) -> Result<String, Error> {
    let invalid = |reason: String| Error::InvalidPath {
        path: path.to_string(),
        reason,
    };

    if path.is_empty() {
        return Err(invalid("a path cannot be empty; use / for every parameter".into()));
    }
    if let Some(c) = path.chars().find(|c| !is_name_char(*c)) {
        return Err(invalid(format!(
            "{c:?} is not allowed; names contain only letters, digits and _ . - /"
        )));
    }

    if !path.starts_with('/') {
        return Err(invalid(format!(
            "a path must start with '/'; did you mean /{path}?"
        )));
    }
    let trimmed = path.trim_end_matches('/');
    let normalized = if trimmed.is_empty() { "/" } else { trimmed };
    if normalized.contains("//") {
        return Err(invalid("a path cannot contain an empty segment ('//')".into()));
    }
    if normalized == SECRETS_MANAGER_PREFIX
        || normalized.starts_with(&format!("{SECRETS_MANAGER_PREFIX}/"))
    {
        return Err(invalid(
            "Secrets Manager references cannot be listed by path; each secret must be named"
                .into(),
        ));
    }
    Ok(normalized.to_string())
}

/// Parses each `VAR=NAME[:SELECTOR]`; a variable named twice is an error.
fn parse_maps(specs: &[String]) -> Result<Vec<MapSpec>, Error> {
    let mut maps: Vec<MapSpec> = Vec::with_capacity(specs.len());
    for spec in specs {
        let invalid = |reason: &str| Error::Usage(format!("invalid --map {spec:?}: {reason}"));
        let Some((variable, request)) = spec.split_once('=') else {
            return Err(invalid("expected VAR=NAME, for example DB_PASSWORD=/myapp/db/password"));
        };
        if !is_valid_variable(variable) {
            return Err(invalid("the variable name must match [A-Za-z_][A-Za-z0-9_]*"));
        }
        if maps.iter().any(|m| m.variable == variable) {
            return Err(invalid("the variable is mapped twice"));
        }

        let map = if request.starts_with(&format!("{SECRETS_MANAGER_PREFIX}/")) {
            // Secret names allow more characters than parameter names; AWS checks them.
            if request.len() == SECRETS_MANAGER_PREFIX.len() + 1 || request.contains(char::is_whitespace) {
                return Err(invalid("name the secret after /aws/reference/secretsmanager/"));
            }
            MapSpec {
                variable: variable.to_string(),
                request: request.to_string(),
                name: request.to_string(),
            }
        } else {
            let (name, selector) = match request.split_once(':') {
                Some((name, selector)) => (name, Some(selector)),
                None => (request, None),
            };
            if name.is_empty() || !name.chars().all(is_name_char) {
                return Err(invalid(
                    "a parameter name contains only letters, digits and _ . - /",
                ));
            }
            if let Some(selector) = selector {
                if !selector.chars().all(|c| c.is_ascii_digit()) {
                    ensure_label(selector).map_err(|_| invalid("the selector after ':' must be a version number or a label"))?;
                } else if selector.is_empty() || selector.starts_with('0') {
                    return Err(invalid("a version number starts at 1"));
                }
            }
            MapSpec {
                variable: variable.to_string(),
                request: request.to_string(),
                name: name.to_string(),
            }
        };
        maps.push(map);
    }
    Ok(maps)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

/// Labels hold letters, digits, `.`, `-` and `_`, are at most 100 characters long and do
/// not start with a digit (AWS's rules for parameter labels).
fn ensure_label(label: &str) -> Result<(), Error> {
    let valid = !label.is_empty()
        && label.len() <= 100
        && !label.starts_with(|c: char| c.is_ascii_digit())
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "invalid label {label:?}: labels hold letters, digits, '.', '-' and '_' and do not start with a digit"
        )))
    }
}

fn ensure_variables(names: Vec<String>) -> Result<Vec<String>, Error> {
    let mut checked = Vec::with_capacity(names.len());
    for name in names {
        if !is_valid_variable(&name) {
            return Err(Error::Usage(format!(
                "invalid --require {name:?}: a variable name matches [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
        if !checked.contains(&name) {
            checked.push(name);
        }
    }
    Ok(checked)
}

/// Region names are lower-case letters, digits and dashes (`us-east-1`); anything else
/// would end up in a host name.
fn ensure_region(region: &str, source: &RegionSource) -> Result<(), Error> {
    let valid = region
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "invalid region {region:?} from {source}: expected a name such as us-east-1"
        )))
    }
}

/// Picks the endpoint from `--endpoint-url`, `AWS_ENDPOINT_URL_SSM` or `AWS_ENDPOINT_URL`,
/// as the AWS SDKs do, and checks that it is an http or https URL.
fn resolve_endpoint(
    flag: Option<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, Error> {
    let ignore_env = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let candidates = [
        ("--endpoint-url", non_empty(flag)),
        (
            "AWS_ENDPOINT_URL_SSM",
            (!ignore_env).then(|| env("AWS_ENDPOINT_URL_SSM")).flatten(),
        ),
        (
            "AWS_ENDPOINT_URL",
            (!ignore_env).then(|| env("AWS_ENDPOINT_URL")).flatten(),
        ),
    ];
    let Some((source, url)) = candidates
        .into_iter()
        .find_map(|(source, url)| non_empty(url).map(|u| (source, u)))
    else {
        return Ok(None);
    };

    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(Some(url)),
        _ => Err(Error::Usage(format!(
            "invalid endpoint URL {url:?} from {source}: expected http://HOST[:PORT] or https://HOST[:PORT]"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn config(args: &[&str], env: &[(&str, &str)]) -> Result<Config, Error> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cli = crate::cli::Cli::try_parse_from(
            std::iter::once("qlarius-env").chain(args.iter().copied()),
        )
        .unwrap();
        Config::from_args(cli.selection, |name| env.get(name).cloned())
    }

    #[test]
    fn defaults_require_qlarius_variables() {
        let config = config(&["--", "true"], &[]).unwrap();
        assert_eq!(config.paths, ["/qlarius"]);
        assert_eq!(
            config.required,
            ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_VERIFY_SERVICE_SID", "CLOAK_KEY"]
        );
    }

    #[test]
    fn custom_path_requires_nothing_by_default() {
        let config = config(&["--path", "/myapp", "--", "true"], &[]).unwrap();
        assert!(config.required.is_empty());
    }

    #[test]
    fn require_replaces_default_list() {
        let config = config(&["--require", "A", "--require", "B", "--", "true"], &[]).unwrap();
        assert_eq!(config.required, ["A", "B"]);
    }

    #[test]
    fn invalid_require_is_usage_error() {
        assert!(matches!(
            config(&["--require", "1X", "--", "true"], &[]),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn path_normalisation() {
        assert_eq!(normalize_path("/MyApp/").unwrap(), "/MyApp");
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("///").unwrap(), "/");
        assert_eq!(normalize_path("/a/b.c-d_e").unwrap(), "/a/b.c-d_e");
    }

    #[test]
    fn path_without_slash_suggests_fix() {
        let error = normalize_path("MyApp").unwrap_err();
        assert!(error.to_string().contains("did you mean /MyApp?"), "{error}");
    }

    #[test]
    fn path_with_bad_character_is_rejected() {
        assert!(normalize_path("/my app").is_err());
        assert!(normalize_path("/a//b").is_err());
        assert!(normalize_path("").is_err());
    }

    #[test]
    fn secrets_manager_prefix_is_rejected_as_path() {
        let error = normalize_path("/aws/reference/secretsmanager/").unwrap_err();
        assert!(error.to_string().contains("must be named"), "{error}");
        assert!(normalize_path("/aws/reference/secretsmanagerx").is_ok());
    }

    #[test]
    fn region_precedence() {
        let both = [("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "us-east-1")];
        let c = config(&["--", "true"], &both).unwrap();
        assert_eq!(
            c.region,
            Some(("eu-west-1".into(), RegionSource::Environment("AWS_REGION")))
        );
        let c = config(&["--", "true"], &both[1..]).unwrap();
        assert_eq!(
            c.region,
            Some(("us-east-1".into(), RegionSource::Environment("AWS_DEFAULT_REGION")))
        );
        let c = config(&["--region", "ap-south-1", "--", "true"], &both).unwrap();
        assert_eq!(c.region, Some(("ap-south-1".into(), RegionSource::Flag)));
        let c = config(&["--", "true"], &[("AWS_REGION", "")]).unwrap();
        assert_eq!(c.region, None);
    }

    #[test]
    fn invalid_region_is_rejected() {
        assert!(config(&["--region", "us east", "--", "true"], &[]).is_err());
    }

    #[test]
    fn endpoint_precedence() {
        let env = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:2"),
        ];
        let c = config(&["--", "true"], &env).unwrap();
        assert_eq!(c.endpoint_url.as_deref(), Some("http://127.0.0.1:2"));
        let c = config(&["--", "true"], &env[..1]).unwrap();
        assert_eq!(c.endpoint_url.as_deref(), Some("http://127.0.0.1:1"));
        let c = config(&["--endpoint-url", "https://h", "--", "true"], &env).unwrap();
        assert_eq!(c.endpoint_url.as_deref(), Some("https://h"));
        let ignore = [env[0], ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")];
        assert_eq!(config(&["--", "true"], &ignore).unwrap().endpoint_url, None);
    }

    #[test]
    fn endpoint_must_be_http_url() {
        let error = config(&["--endpoint-url", "localhost:4566", "--", "true"], &[]).unwrap_err();
        assert!(error.to_string().contains("invalid endpoint URL"), "{error}");
    }

    #[test]
    fn maps_parse_names_and_selectors() {
        let c = config(
            &[
                "--map", "DB=/myapp/db/password:1",
                "--map", "LABELLED=/myapp/db/password:prod",
                "--map", "SECRET=/aws/reference/secretsmanager/myapp/prod/db",
                "--", "true",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.maps[0].name, "/myapp/db/password");
        assert_eq!(c.maps[0].request, "/myapp/db/password:1");
        assert_eq!(c.maps[1].request, "/myapp/db/password:prod");
        assert!(c.maps[2].is_secrets_manager());
        assert!(!c.maps[0].is_secrets_manager());
        assert!(c.paths.is_empty(), "maps alone load no default path");
        assert!(c.required.is_empty());
    }

    #[test]
    fn invalid_maps_are_usage_errors() {
        for spec in [
            "NOEQUALS",
            "1X=/a",
            "X=",
            "X=/a b",
            "X=/a:0",
            "X=/a:9lives",
            "X=/aws/reference/secretsmanager/",
        ] {
            let error = config(&["--map", spec, "--", "true"], &[]).unwrap_err();
            assert!(matches!(error, Error::Usage(_)), "{spec}: {error}");
        }
        let error = config(&["--map", "X=/a", "--map", "X=/b", "--", "true"], &[]).unwrap_err();
        assert!(error.to_string().contains("mapped twice"), "{error}");
    }

    #[test]
    fn label_is_checked() {
        assert!(config(&["--label", "prod", "--", "true"], &[]).is_ok());
        assert!(config(&["--label", "1prod", "--", "true"], &[]).is_err());
        assert!(config(&["--label", "pr od", "--", "true"], &[]).is_err());
    }
}
