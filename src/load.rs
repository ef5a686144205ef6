//! Loading: read every configured path, map names to variables, layer the paths and check
//! the required variables. Shared by every mode that needs the variables.
//!
//! Nothing is returned unless every step succeeds: a failed request, a missing required
//! variable or a bad name is an error, never a partial set.

use crate::aws;
use crate::config::{Config, MapSpec};
use crate::error::Error;
use crate::mapping;
use crate::ssm::{self, Parameter};
use secrecy::{ExposeSecret, SecretString};
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// A variable ready for the command's environment.
pub struct Variable {
    pub name: String,
    /// The full name of the parameter it came from.
    pub parameter: String,
    pub value: SecretString,
    /// `String`, `StringList` or `SecureString`.
    pub kind: String,
}

/// The parameters one load read from Parameter Store.
pub struct Loaded {
    /// Each path with the parameters under it, in the order the paths were given.
    pub paths: Vec<(String, Vec<Parameter>)>,
    /// Each `--map` with the parameter it names.
    pub maps: Vec<(MapSpec, Parameter)>,
    pub requests: u32,
}

/// The variables of one load, sorted by name, and what it took to get them.
pub struct LoadReport {
    pub variables: Vec<Variable>,
    pub requests: u32,
    pub elapsed: Duration,
}

/// Loads and checks every variable the configuration selects, and logs the start-up line.
pub async fn load_variables(config: &Config) -> Result<LoadReport, Error> {
    let started = Instant::now();
    let loaded = load(config).await?;
    let requests = loaded.requests;
    let variables = select(config, loaded)?;
    ensure_secure(config, &variables)?;
    let report = LoadReport {
        variables,
        requests,
        elapsed: started.elapsed(),
    };
    log_loaded(config, &report);
    Ok(report)
}

/// Reads every configured path and map within the start-up budget. The paths and the
/// batches of named parameters are fetched concurrently; the first failure ends the load.
pub async fn load(config: &Config) -> Result<Loaded, Error> {
    let aws = aws::configure(config).await?;
    aws::splay(config.splay).await;
    let deadline = tokio::time::Instant::now() + config.timeout;
    tracing::debug!(
        region = %aws.region,
        source = %aws.region_source,
        endpoint = aws.endpoint_url.as_deref().unwrap_or("default"),
        "configured AWS"
    );

    // What the load is waiting for, named in the error if the budget runs out.
    let pending = Pending::default();
    let work = async {
        let credentials = {
            let _waiting = pending.start("AWS credentials".into());
            aws::resolve_credentials_until(&aws, deadline).await?
        };
        let client = ssm::client(&aws, credentials);
        read_all(config, &aws, &client, &pending).await
    };
    within_budget(deadline, config, &pending, work).await
}

/// Reads every configured path and map with an existing client, within the start-up
/// budget. Used by the watch mode, which keeps one client with refreshing credentials
/// for every load.
pub async fn load_with(config: &Config, aws: &aws::Aws, client: &aws_sdk_ssm::Client) -> Result<Loaded, Error> {
    let deadline = tokio::time::Instant::now() + config.timeout;
    let pending = Pending::default();
    let work = read_all(config, aws, client, &pending);
    within_budget(deadline, config, &pending, work).await
}

async fn read_all(
    config: &Config,
    aws: &aws::Aws,
    client: &aws_sdk_ssm::Client,
    pending: &Pending,
) -> Result<Loaded, Error> {
    let walks = config.paths.iter().map(|path| async move {
        let _waiting = pending.start(format!("GetParametersByPath {path}"));
        let contents = ssm::get_parameters_by_path(client, aws, path, config.label.as_deref()).await?;
        if contents.parameters.is_empty() {
            ensure_empty_allowed(config, client, path).await?;
        }
        Ok::<_, Error>((path.clone(), contents))
    });
    let (walked, (maps, map_requests)) = futures_util::future::try_join(
        futures_util::future::try_join_all(walks),
        load_maps(config, client, aws, pending),
    )
    .await?;

    let requests = walked.iter().map(|(_, c)| c.requests).sum::<u32>() + map_requests;
    let paths = walked
        .into_iter()
        .map(|(path, contents)| (path, contents.parameters))
        .collect();
    Ok(Loaded {
        paths,
        maps,
        requests,
    })
}

/// Runs `work` until `deadline`, the end of the start-up budget `config.timeout`.
async fn within_budget(
    deadline: tokio::time::Instant,
    config: &Config,
    pending: &Pending,
    work: impl Future<Output = Result<Loaded, Error>>,
) -> Result<Loaded, Error> {
    // Pinned here so that `work`, and the pending-operation guards it holds, outlive the
    // timeout: dropping it first would leave nothing to name in the error.
    let mut work = std::pin::pin!(work);
    match tokio::time::timeout_at(deadline, work.as_mut()).await {
        Ok(result) => result,
        Err(_) => Err(Error::TimedOut {
            waiting_on: aws::describe_wait(pending.describe()),
            budget: config.timeout,
        }),
    }
}

/// Reads the `--map` parameters: ordinary ones with GetParameters, ten names a request,
/// and Secrets Manager references one at a time with GetParameter. Every name that
/// Parameter Store reports as invalid is listed in one error.
async fn load_maps(
    config: &Config,
    client: &aws_sdk_ssm::Client,
    aws: &aws::Aws,
    pending: &Pending,
) -> Result<(Vec<(MapSpec, Parameter)>, u32), Error> {
    let (references, named): (Vec<&MapSpec>, Vec<&MapSpec>) =
        config.maps.iter().partition(|m| m.is_secrets_manager());

    let batches = batch_by_name(&named);
    let requests = batches.iter().map(|batch| async move {
        let names: Vec<String> = batch.iter().map(|m| m.request.clone()).collect();
        let _waiting = pending.start(format!("GetParameters {}", names.join(", ")));
        let contents = ssm::get_parameters(client, aws, &names).await?;
        Ok::<_, Error>((batch, contents))
    });
    let secrets = references.iter().map(|map| async move {
        let _waiting = pending.start(format!("GetParameter {}", map.request));
        let parameter = ssm::get_secret_reference(client, aws, &map.request).await?;
        Ok::<_, Error>((map.request.clone(), parameter))
    });
    let (batches, secrets) = futures_util::future::try_join(
        futures_util::future::try_join_all(requests),
        futures_util::future::try_join_all(secrets),
    )
    .await?;

    // Every request name, with the parameter it returned.
    let mut found: Vec<(String, Parameter)> = Vec::with_capacity(config.maps.len());
    let mut invalid: Vec<String> = Vec::new();
    let mut request_count = secrets.len() as u32;
    found.extend(secrets);
    for (batch, contents) in batches {
        request_count += contents.requests;
        invalid.extend(contents.invalid);
        for mut parameter in contents.parameters {
            let Some(map) = batch.iter().find(|m| m.name == parameter.name) else {
                return Err(Error::Protocol {
                    operation: "GetParameters",
                    subject: parameter.name,
                    detail: "the response returned a parameter that was not requested".into(),
                });
            };
            parameter.name = map.request.clone();
            found.push((map.request.clone(), parameter));
        }
    }
    if !invalid.is_empty() {
        let missing = config
            .maps
            .iter()
            .filter(|m| invalid.contains(&m.request))
            .map(|m| (m.request.clone(), m.variable.clone()))
            .collect();
        return Err(Error::NamedNotFound { missing });
    }

    let mut maps = Vec::with_capacity(config.maps.len());
    for map in &config.maps {
        let Some((_, parameter)) = found.iter().find(|(request, _)| *request == map.request) else {
            return Err(Error::Protocol {
                operation: "GetParameters",
                subject: map.request.clone(),
                detail: "the response neither returned nor rejected this name".into(),
            });
        };
        maps.push((map.clone(), parameter.duplicate()));
    }
    Ok((maps, request_count))
}

/// Groups the distinct requested names into GetParameters batches of at most ten, with
/// each parameter name at most once per batch (`/a:1` and `/a:2` go to different
/// batches), so that results can be matched by name alone.
pub fn batch_by_name<'a>(maps: &[&'a MapSpec]) -> Vec<Vec<&'a MapSpec>> {
    let mut batches: Vec<Vec<&MapSpec>> = Vec::new();
    for map in maps {
        let already_requested = batches.iter().flatten().any(|m| m.request == map.request);
        if already_requested {
            continue;
        }
        match batches
            .iter_mut()
            .find(|b| b.len() < 10 && b.iter().all(|m| m.name != map.name))
        {
            Some(batch) => batch.push(map),
            None => batches.push(vec![map]),
        }
    }
    batches
}

/// The operations under way, so that a timeout can say what it was waiting for.
#[derive(Default)]
struct Pending(RefCell<Vec<String>>);

/// Removes its operation from [`Pending`] when dropped.
struct PendingGuard<'a> {
    pending: &'a Pending,
    operation: String,
}

impl Pending {
    fn start(&self, operation: String) -> PendingGuard<'_> {
        self.0.borrow_mut().push(operation.clone());
        PendingGuard {
            pending: self,
            operation,
        }
    }

    fn describe(&self) -> String {
        let pending = self.0.borrow();
        if pending.is_empty() {
            "Parameter Store".into()
        } else {
            pending.join(", ")
        }
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.pending.0.borrow_mut();
        if let Some(index) = pending.iter().position(|o| *o == self.operation) {
            pending.remove(index);
        }
    }
}

async fn ensure_empty_allowed(config: &Config, client: &aws_sdk_ssm::Client, path: &str) -> Result<(), Error> {
    if config.allow_empty {
        tracing::warn!("0 parameters under {path}; starting anyway because of --allow-empty");
        return Ok(());
    }
    if let Some(label) = &config.label {
        return Err(Error::NoLabelled {
            path: path.to_string(),
            label: label.clone(),
        });
    }
    // One extra request, on the failure path only, to tell a leaf name from a typo.
    if path != "/" && ssm::is_parameter(client, path).await {
        return Err(Error::ParameterNotPath { path: path.to_string() });
    }
    Err(Error::EmptyPath { path: path.to_string() })
}

/// Maps parameters to variables, layers the paths, applies the maps and checks the
/// required variables.
///
/// Within one path, two parameters that map to the same variable are an error. Across
/// paths the later path wins, and a map wins over every path. Each replacement is logged.
/// A path parameter that maps to a protected name (`PATH`, `LD_PRELOAD`, ...) is skipped
/// with a warning; only an explicit map may set one.
pub fn select(config: &Config, loaded: Loaded) -> Result<Vec<Variable>, Error> {
    let mut variables: Vec<Variable> = Vec::new();
    for (path, parameters) in loaded.paths {
        if let Some(stray) = parameters.iter().find(|p| !mapping::is_below(&path, &p.name)) {
            return Err(Error::Protocol {
                operation: "GetParametersByPath",
                subject: path,
                detail: format!("the response returned {}, which is not below the path", stray.name),
            });
        }
        // A parameter that a --map names is set by the map alone: that is how a map
        // renames a parameter whose converted name would be invalid or would collide.
        let parameters: Vec<Parameter> = parameters
            .into_iter()
            .filter(|p| !config.maps.iter().any(|m| m.name == p.name))
            .collect();
        let names = mapping::map_path(
            &path,
            parameters.iter().map(|p| p.name.as_str()),
            config.preserve_case,
        )?;
        let names: Vec<String> = names.into_iter().map(|(variable, _)| variable).collect();
        for (name, parameter) in names.into_iter().zip(parameters) {
            if mapping::is_protected(&name) {
                tracing::warn!(
                    "skipping {} from {}: {} is protected and only an explicit --map may set it",
                    name, parameter.name, name
                );
                continue;
            }
            add_variable(&mut variables, Variable::new(name, parameter)?);
        }
    }
    for (map, parameter) in loaded.maps {
        add_variable(&mut variables, Variable::new(map.variable, parameter)?);
    }

    let missing: Vec<String> = config
        .required
        .iter()
        .filter(|name| !variables.iter().any(|v| &v.name == *name))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingRequired {
            missing,
            paths: config.paths.clone(),
            known: config.known_parameters.clone(),
        });
    }

    variables.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(variables)
}

/// Warns about, or with `--require-secure` rejects, variables whose parameter is stored
/// unencrypted. Secrets Manager references count as encrypted.
pub fn ensure_secure(config: &Config, variables: &[Variable]) -> Result<(), Error> {
    let plain: Vec<String> = variables
        .iter()
        .filter(|v| v.kind != "SecureString" && !v.parameter.starts_with("/aws/reference/secretsmanager/"))
        .map(|v| v.parameter.clone())
        .collect();
    if plain.is_empty() {
        return Ok(());
    }
    if config.require_secure {
        return Err(Error::NotSecure { parameters: plain });
    }
    tracing::warn!(
        "not SecureString, so stored unencrypted in Parameter Store: {}",
        plain.join(", ")
    );
    Ok(())
}

fn add_variable(variables: &mut Vec<Variable>, variable: Variable) {
    match variables.iter_mut().find(|v| v.name == variable.name) {
        Some(existing) => {
            tracing::info!(
                "{} from {} replaces the one from {}",
                variable.name, variable.parameter, existing.parameter
            );
            *existing = variable;
        }
        None => variables.push(variable),
    }
}

impl Variable {
    /// Takes a loaded parameter as the value of `name`. A NUL byte cannot be part of an
    /// environment variable, so it is an error naming the parameter.
    fn new(name: String, parameter: Parameter) -> Result<Variable, Error> {
        if parameter.value.expose_secret().contains('\0') {
            return Err(Error::NulInValue { parameter: parameter.name });
        }
        Ok(Variable {
            name,
            parameter: parameter.name,
            value: parameter.value,
            kind: parameter.kind,
        })
    }
}

pub fn log_loaded(config: &Config, report: &LoadReport) {
    let (variables, requests) = (&report.variables, report.requests);
    let names: Vec<&str> = variables.iter().map(|v| v.name.as_str()).collect();
    tracing::info!(
        "loaded {} variable{} from {} in {} ms ({} request{}){}",
        variables.len(),
        if variables.len() == 1 { "" } else { "s" },
        sources(config),
        report.elapsed.as_millis(),
        requests,
        if requests == 1 { "" } else { "s" },
        if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) }
    );
}

/// Names what was loaded for the start-up line: the paths, then `N maps`.
fn sources(config: &Config) -> String {
    let mut parts = config.paths.clone();
    match config.maps.len() {
        0 => {}
        1 => parts.push("1 map".into()),
        n => parts.push(format!("{n} maps")),
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(variable: &str, request: &str) -> MapSpec {
        MapSpec {
            variable: variable.into(),
            request: request.into(),
            name: request.split(':').next().unwrap().into(),
        }
    }

    #[test]
    fn batches_hold_ten_distinct_names() {
        let maps: Vec<MapSpec> = (0..23).map(|i| map(&format!("V{i}"), &format!("/p/k{i}"))).collect();
        let refs: Vec<&MapSpec> = maps.iter().collect();
        let sizes: Vec<usize> = batch_by_name(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 3]);
    }

    #[test]
    fn same_name_with_two_selectors_splits() {
        let maps = [map("A", "/p/x:1"), map("B", "/p/x:2"), map("C", "/p/y"), map("D", "/p/x:1")];
        let refs: Vec<&MapSpec> = maps.iter().collect();
        let batches = batch_by_name(&refs);
        let requests: Vec<Vec<&str>> = batches
            .iter()
            .map(|b| b.iter().map(|m| m.request.as_str()).collect())
            .collect();
        assert_eq!(requests, [vec!["/p/x:1", "/p/y"], vec!["/p/x:2"]]);
    }
}
