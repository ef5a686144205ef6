//! Loading: read every configured path, map names to variables, layer the paths and check
//! the required variables. Shared by every mode that needs the variables.
//!
//! Nothing is returned unless every step succeeds: a failed request, a missing required
//! variable or a bad name is an error, never a partial set.

use crate::aws;
use crate::config::Config;
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
    pub version: i64,
}

/// What one load read from Parameter Store.
pub struct Loaded {
    /// Each path with the parameters under it, in the order the paths were given.
    pub paths: Vec<(String, Vec<Parameter>)>,
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
    let variables = select(config, loaded.paths)?;
    let report = LoadReport {
        variables,
        requests: loaded.requests,
        elapsed: started.elapsed(),
    };
    log_loaded(config, &report);
    Ok(report)
}

/// Reads every configured path within the start-up budget.
pub async fn load(config: &Config) -> Result<Loaded, Error> {
    let aws = aws::configure(config).await?;
    tracing::debug!(
        region = %aws.region,
        source = %aws.region_source,
        endpoint = aws.endpoint_url.as_deref().unwrap_or("default"),
        "configured AWS"
    );

    // What the launch is waiting for, named in the error if the budget runs out.
    let stage = RefCell::new(String::from("AWS credentials"));
    let work = async {
        let credentials = aws::resolve_credentials(&aws).await?;
        let client = ssm::client(&aws, credentials);
        let mut paths = Vec::with_capacity(config.paths.len());
        let mut requests = 0;
        for path in &config.paths {
            stage.replace(format!("GetParametersByPath {path}"));
            let contents = ssm::get_parameters_by_path(&client, &aws, path).await?;
            requests += contents.requests;
            if contents.parameters.is_empty() {
                ensure_empty_allowed(config, &client, path).await?;
            }
            paths.push((path.clone(), contents.parameters));
        }
        Ok(Loaded { paths, requests })
    };

    match tokio::time::timeout(config.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::TimedOut {
            waiting_on: stage.into_inner(),
            budget: config.timeout,
        }),
    }
}

async fn ensure_empty_allowed(config: &Config, client: &aws_sdk_ssm::Client, path: &str) -> Result<(), Error> {
    if config.allow_empty {
        tracing::warn!("0 parameters under {path}; starting anyway because of --allow-empty");
        return Ok(());
    }
    // One extra request, on the failure path only, to tell a leaf name from a typo.
    if path != "/" && ssm::is_parameter(client, path).await {
        return Err(Error::ParameterNotPath { path: path.to_string() });
    }
    Err(Error::EmptyPath { path: path.to_string() })
}

/// Maps parameters to variables, layers the paths and checks the required variables.
///
/// Within one path two parameters that map to the same variable are an error; across
/// paths the later path wins and the replacement is logged.
pub fn select(config: &Config, paths: Vec<(String, Vec<Parameter>)>) -> Result<Vec<Variable>, Error> {
    let mut variables: Vec<Variable> = Vec::new();
    for (path, parameters) in paths {
        let names = mapping::map_path(&path, parameters.iter().map(|p| p.name.as_str()), false)?;
        let names: Vec<String> = names.into_iter().map(|(variable, _)| variable).collect();
        for (name, parameter) in names.into_iter().zip(parameters) {
            if parameter.value.expose_secret().contains('\0') {
                return Err(Error::NulInValue { parameter: parameter.name });
            }
            let variable = Variable {
                name,
                parameter: parameter.name,
                value: parameter.value,
                kind: parameter.kind,
                version: parameter.version,
            };
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

fn log_loaded(config: &Config, report: &LoadReport) {
    let (variables, requests) = (&report.variables, report.requests);
    let names: Vec<&str> = variables.iter().map(|v| v.name.as_str()).collect();
    tracing::info!(
        "loaded {} variable{} from {} in {} ms ({} request{}): {}",
        variables.len(),
        if variables.len() == 1 { "" } else { "s" },
        config.paths.join(", "),
        report.elapsed.as_millis(),
        requests,
        if requests == 1 { "" } else { "s" },
        names.join(", ")
    );
}
