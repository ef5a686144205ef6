//! Watching Parameter Store for changes (`--watch`).
//!
//! Each poll lists the names and versions under every path, and of every `--map`
//! parameter, with `WithDecryption=false`, so it costs no KMS request and the ciphertext
//! it receives is never read. Only when the
//! `(name, version)` sets differ from the last load does the watcher fetch the decrypted
//! values, check them against the launch rules, and send the new variables to the
//! supervisor. The watcher keeps a keyed hash of each value, never the value.

use crate::aws::{self, Aws};
use crate::config::{Config, MapSpec};
use crate::error::{Error, sanitize};
use crate::load::{self, LoadReport, Loaded, Variable};
use crate::ssm;
use aws_sdk_ssm::Client;
use secrecy::ExposeSecret;
use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// The first retry delay after a failed poll; each further failure doubles it, up to the
/// watch interval.
const RETRY_START: Duration = Duration::from_secs(5);

/// The versions a poll compares: each path's parameters as `(name, version)` sorted by name, and
/// each `--map` request with its parameter's version, `None` when the request is invalid.
/// Secrets Manager references are left out: they cannot be read without decrypting.
#[derive(Debug, Default, PartialEq, Eq)]
struct Versions {
    paths: Vec<(String, Vec<(String, i64)>)>,
    maps: Vec<(String, Option<i64>)>,
}

/// A variable as the watcher remembers it, with a keyed hash in place of the value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    name: String,
    value_hash: u64,
}

pub struct Watcher {
    config: Config,
    aws: Aws,
    client: Client,
    interval: Duration,
    versions: Versions,
    fingerprints: Vec<Fingerprint>,
    hasher: RandomState,
}

impl Watcher {
    /// Runs the first load and returns the watcher with the variables to start the command
    /// with.
    ///
    /// The launch's credential check runs first, so a missing credential fails with the
    /// same error as without --watch. After that the client uses the SDK's provider
    /// chain, which refreshes credentials before they expire (a role's or SSO session's),
    /// instead of the one-shot credentials a plain launch uses.
    pub async fn start(config: Config, interval: Duration) -> Result<(Watcher, Vec<Variable>), Error> {
        let started = Instant::now();
        let aws = aws::configure(&config).await?;
        let budget = config.timeout;
        let credentials = match tokio::time::timeout(budget, aws::resolve_credentials(&aws)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::TimedOut {
                    waiting_on: "AWS credentials".into(),
                    budget,
                });
            }
        };
        let provider = aws.sdk_config.credentials_provider().unwrap_or(credentials);
        let client = ssm::client(&aws, provider);

        let loaded = load::load_with(&config, &aws, &client).await?;
        let requests = loaded.requests;
        let versions = versions_of(&loaded);
        let variables = load::select(&config, loaded)?;
        load::ensure_secure(&config, &variables)?;
        let report = LoadReport {
            variables,
            requests,
            elapsed: started.elapsed(),
        };
        load::log_loaded(&config, &report);
        tracing::info!(
            "watching for changes every {} (jittered)",
            humantime::format_duration(interval)
        );
        let references: Vec<&str> = config
            .maps
            .iter()
            .filter(|m| m.is_secrets_manager())
            .map(|m| m.request.as_str())
            .collect();
        if !references.is_empty() {
            // NOTE: a Secrets Manager reference can only be read decrypted, so polling it
            // would cost a decryption every interval; its changes are not detected.
            tracing::warn!(
                "--watch does not detect changes to Secrets Manager references: {}",
                references.join(", ")
            );
        }

        let mut watcher = Watcher {
            config,
            aws,
            client,
            interval,
            versions,
            fingerprints: Vec::new(),
            hasher: RandomState::new(),
        };
        watcher.fingerprints = watcher.fingerprints_of(&report.variables);
        Ok((watcher, report.variables))
    }

    /// Polls until the supervisor stops listening, sending each valid new set of
    /// variables. Failures are logged and retried with backoff; they never reach the
    /// command.
    pub async fn run(mut self, changes: UnboundedSender<Vec<Variable>>) {
        let mut failures: u32 = 0;
        loop {
            tokio::time::sleep(jittered(next_wait(self.interval, failures))).await;
            if changes.is_closed() {
                return;
            }

            match self.check().await {
                Ok(Some(variables)) => {
                    failures = 0;
                    if changes.send(variables).is_err() {
                        return;
                    }
                }
                Ok(None) => failures = 0,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        "checking Parameter Store for changes failed ({failures} in a row); the \
                         command keeps running; next try in about {}: {}",
                        humantime::format_duration(next_wait(self.interval, failures)),
                        sanitize(&error.to_string())
                    );
                    continue;
                }
            }
        }
    }

    /// Runs one poll. Returns the new variables when values changed and pass the launch
    /// rules, `None` when nothing is to be done, and an error when Parameter Store could
    /// not be read.
    async fn check(&mut self) -> Result<Option<Vec<Variable>>, Error> {
        let versions = self.list_versions().await?;
        if versions == self.versions {
            tracing::debug!("no change in Parameter Store");
            return Ok(None);
        }

        tracing::debug!("versions changed in Parameter Store; loading the new values");
        let loaded = match load::load_with(&self.config, &self.aws, &self.client).await {
            Ok(loaded) => loaded,
            Err(error) if breaks_launch_rules(&error) => {
                self.reject(versions, &error);
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let versions = versions_of(&loaded);
        let selected = load::select(&self.config, loaded)
            .and_then(|variables| load::ensure_secure(&self.config, &variables).map(|()| variables));
        let variables = match selected {
            Ok(variables) => variables,
            Err(error) => {
                self.reject(versions, &error);
                return Ok(None);
            }
        };
        self.versions = versions;

        let fingerprints = self.fingerprints_of(&variables);
        let changed = describe_changes(&self.fingerprints, &fingerprints);
        if changed.is_empty() {
            tracing::info!("parameters changed in Parameter Store, but no variable's value did");
            return Ok(None);
        }
        tracing::info!("changed in Parameter Store: {}", changed.join(", "));
        self.fingerprints = fingerprints;
        Ok(Some(variables))
    }

    /// Logs a change that would break the launch rules, and remembers its versions so that
    /// the same state is not fetched and decrypted again on every poll. The command keeps
    /// running with the environment it has.
    fn reject(&mut self, versions: Versions, error: &Error) {
        tracing::error!(
            "ignoring the change in Parameter Store: {}; the command keeps running with its \
             current values",
            sanitize(&error.to_string())
        );
        if let Some(hint) = error.hint() {
            tracing::info!("hint: {}", sanitize(&hint));
        }
        self.versions = versions;
    }

    /// Lists every path's and map's versions without decrypting. The `Value` fields of the
    /// responses, ciphertext for a SecureString, are dropped unread.
    async fn list_versions(&self) -> Result<Versions, Error> {
        let work = async {
            let mut versions = Versions::default();
            for path in &self.config.paths {
                versions.paths.push((path.clone(), self.list_path(path).await?));
            }
            versions.maps = self.list_maps().await?;
            Ok(versions)
        };
        match tokio::time::timeout(self.config.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::TimedOut {
                waiting_on: "GetParametersByPath (checking for changes)".into(),
                budget: self.config.timeout,
            }),
        }
    }

    async fn list_path(&self, path: &str) -> Result<Vec<(String, i64)>, Error> {
        let mut versions = Vec::new();
        let mut next_token: Option<String> = None;
        let mut seen_tokens = HashSet::new();
        loop {
            let page = self
                .client
                .get_parameters_by_path()
                .path(path)
                .recursive(true)
                .with_decryption(false)
                .max_results(10)
                .set_parameter_filters(self.config.label.as_deref().map(ssm::label_filter))
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| ssm::classify(e, "GetParametersByPath", "ssm:GetParametersByPath", path, &self.aws, &[]))?;
            for parameter in page.parameters.unwrap_or_default() {
                versions.push((parameter.name.unwrap_or_default(), parameter.version));
            }

            // As in the decrypted walk, a page may be short or empty while a token remains,
            // so only a missing token ends the walk.
            match page.next_token {
                Some(token) if !token.is_empty() => {
                    if !seen_tokens.insert(token.clone()) {
                        return Err(Error::Protocol {
                            operation: "GetParametersByPath",
                            subject: path.to_string(),
                            detail: "NextToken repeated; the walk would never end".into(),
                        });
                    }
                    next_token = Some(token);
                }
                _ => break,
            }
        }
        versions.sort();
        Ok(versions)
    }

    /// Reads the versions of the `--map` parameters in batches of ten, each name at most
    /// once per batch as the load does, so that results match their request by name.
    async fn list_maps(&self) -> Result<Vec<(String, Option<i64>)>, Error> {
        let named: Vec<&MapSpec> = self.config.maps.iter().filter(|m| !m.is_secrets_manager()).collect();
        let mut versions = Vec::with_capacity(named.len());
        for batch in load::batch_by_name(&named) {
            let names: Vec<String> = batch.iter().map(|m| m.request.clone()).collect();
            let subject = names.join(", ");
            let output = self
                .client
                .get_parameters()
                .set_names(Some(names))
                .with_decryption(false)
                .send()
                .await
                .map_err(|e| ssm::classify(e, "GetParameters", "ssm:GetParameters", &subject, &self.aws, &[]))?;
            let returned = output.parameters.unwrap_or_default();
            for map in batch {
                let version = returned
                    .iter()
                    .find(|p| p.name.as_deref() == Some(map.name.as_str()))
                    .map(|p| p.version);
                versions.push((map.request.clone(), version));
            }
        }
        versions.sort();
        Ok(versions)
    }

    fn fingerprints_of(&self, variables: &[Variable]) -> Vec<Fingerprint> {
        variables
            .iter()
            .map(|v| Fingerprint {
                name: v.name.clone(),
                value_hash: self.hasher.hash_one(v.value.expose_secret()),
            })
            .collect()
    }
}

fn versions_of(loaded: &Loaded) -> Versions {
    let paths = loaded
        .paths
        .iter()
        .map(|(path, parameters)| {
            let mut versions: Vec<(String, i64)> =
                parameters.iter().map(|p| (p.name.clone(), p.version)).collect();
            versions.sort();
            (path.clone(), versions)
        })
        .collect();
    let mut maps: Vec<(String, Option<i64>)> = loaded
        .maps
        .iter()
        .filter(|(map, _)| !map.is_secrets_manager())
        .map(|(map, parameter)| (map.request.clone(), Some(parameter.version)))
        .collect();
    maps.sort();
    Versions { paths, maps }
}

/// Tells whether a load failed because of what Parameter Store contains (the command would
/// not start with it) rather than because Parameter Store could not be read.
fn breaks_launch_rules(error: &Error) -> bool {
    matches!(
        error,
        Error::EmptyPath { .. }
            | Error::ParameterNotPath { .. }
            | Error::MissingRequired { .. }
            | Error::InvalidName { .. }
            | Error::Collision { .. }
            | Error::NulInValue { .. }
            | Error::NamedNotFound { .. }
            | Error::NoLabelled { .. }
            | Error::NotSecure { .. }
    )
}

/// Returns the names of the variables whose values differ, sorted, each marked as
/// changed, added or removed.
fn describe_changes(old: &[Fingerprint], new: &[Fingerprint]) -> Vec<String> {
    let mut changes = Vec::new();
    for variable in new {
        match old.iter().find(|o| o.name == variable.name) {
            Some(previous) if previous.value_hash == variable.value_hash => {}
            Some(_) => changes.push(format!("{} (changed)", variable.name)),
            None => changes.push(format!("{} (added)", variable.name)),
        }
    }
    for variable in old {
        if !new.iter().any(|n| n.name == variable.name) {
            changes.push(format!("{} (removed)", variable.name));
        }
    }
    changes.sort();
    changes
}

/// Returns the wait before the next poll: the interval, or after `failures` failed polls
/// in a row, a backoff that starts at five seconds and doubles up to the interval.
fn next_wait(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let factor = 2u32.saturating_pow(failures - 1);
    RETRY_START.saturating_mul(factor).min(interval)
}

/// Draws a wait between 80% and 120% of `base`, so that instances started together drift
/// apart; the mean stays `base`.
fn jittered(base: Duration) -> Duration {
    // 53 random bits make a uniform fraction in [0, 1). Without randomness, the wait is
    // the interval itself.
    let bits = getrandom::u64().unwrap_or(1 << 63) >> 11;
    let fraction = bits as f64 / (1u64 << 53) as f64;
    base.mul_f64(0.8 + 0.4 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(name: &str, value_hash: u64) -> Fingerprint {
        Fingerprint {
            name: name.into(),
            value_hash,
        }
    }

    #[test]
    fn changes_are_named_not_shown() {
        let old = [fingerprint("A", 1), fingerprint("B", 2), fingerprint("C", 3)];
        let new = [fingerprint("A", 1), fingerprint("B", 9), fingerprint("D", 4)];
        assert_eq!(
            describe_changes(&old, &new),
            ["B (changed)", "C (removed)", "D (added)"]
        );
    }

    #[test]
    fn same_values_mean_no_change() {
        let old = [fingerprint("A", 1)];
        assert!(describe_changes(&old, &old).is_empty());
    }

    #[test]
    fn failed_polls_back_off_up_to_interval() {
        let interval = Duration::from_secs(300);
        let waits: Vec<u64> = (0..9).map(|f| next_wait(interval, f).as_secs()).collect();
        assert_eq!(waits, [300, 5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(next_wait(Duration::from_secs(2), 3), Duration::from_secs(2));
        assert_eq!(next_wait(interval, u32::MAX), interval);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let base = Duration::from_secs(300);
        for _ in 0..1000 {
            let wait = jittered(base);
            assert!(wait >= Duration::from_secs(240), "{wait:?}");
            assert!(wait <= Duration::from_secs(360), "{wait:?}");
        }
    }

    #[test]
    fn launch_rule_errors_keep_the_command() {
        let missing = Error::MissingRequired {
            missing: vec!["A".into()],
            paths: vec!["/p".into()],
            known: Vec::new(),
        };
        assert!(breaks_launch_rules(&missing));
        assert!(breaks_launch_rules(&Error::EmptyPath { path: "/p".into() }));
        let unreachable = Error::Unreachable {
            endpoint: "http://127.0.0.1:1".into(),
            detail: "connection refused".into(),
        };
        assert!(!breaks_launch_rules(&unreachable));
    }
}
