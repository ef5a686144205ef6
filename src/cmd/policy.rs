//! `qlarius-env policy`: the least-privilege IAM policy a launch needs for the configured
//! paths, in place of the broad AmazonSSMReadOnlyAccess managed policy.
//!
//! What each statement allows, and why:
//! - `ssm:GetParametersByPath` on each path's ARN, because IAM authorizes this operation
//!   against the path in the request, not against the parameters it returns. The path's
//!   `/*` ARN is listed too; it adds nothing a recursive read of the path does not already
//!   return.
//! - `ssm:GetParameters` on the parameters below each path: a launch uses it only to tell
//!   a parameter name given as `--path` from an empty path.
//! - `kms:Decrypt` on the key, only when Parameter Store calls KMS on the caller's behalf
//!   (`kms:ViaService`).

use super::{identity, process_env, write_stdout};
use crate::cli::{AwsArgs, SelectionArgs, SourceArgs};
use crate::aws;
use crate::config::{Config, MapSpec};
use crate::error::Error;
use crate::launch::block_on;
use clap::Args;
use serde_json::{Value, json};

const AFTER_HELP: &str = "\
The policy allows what a launch with the same --path options needs, and nothing else:
ssm:GetParametersByPath on each path, ssm:GetParameters on the parameters below it, and
kms:Decrypt on the key, only through Parameter Store in the region (kms:ViaService).
Without --account-id, the account is that of the current credentials (STS
GetCallerIdentity); with it, nothing is sent to AWS.

An IAM policy cannot name a KMS key by alias. With an alias as --key-id (the default is
alias/aws/ssm), the kms:Decrypt statement covers every key of the account in the region,
still only through Parameter Store; pass the key's ARN or id to narrow it. The AWS
managed key aws/ssm already lets every principal in its account decrypt through
Parameter Store, so that statement matters only for a customer managed key.

Examples:
   qlarius-env policy --account-id 111122223333 --region us-east-1 > policy.json
   qlarius-env policy --path /myapp/prod --key-id arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
   aws iam put-user-policy --user-name qlarius-prod-app --policy-name qlarius-env \\
       --policy-document \"$(qlarius-env policy)\"";

/// Print a least-privilege IAM policy (JSON) for the configured paths and maps.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub sources: SourceArgs,

    /// AWS account id (12 digits) that owns the parameters [default: the account of the
    /// current credentials].
    #[arg(long, value_name = "ID", value_parser = parse_account_id)]
    pub account_id: Option<String>,

    /// KMS key that encrypts the SecureString parameters: a key ARN, a key id, or an alias.
    #[arg(long, value_name = "KEY", default_value = "alias/aws/ssm")]
    pub key_id: String,

    /// Also allow ssm:DescribeParameters, which `qlarius-env check` uses to show each
    /// parameter's KMS key. IAM cannot limit it to a path: it reveals the names and
    /// metadata (never the values) of every parameter in the account and region.
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub aws: AwsArgs,
}

pub fn run(args: PolicyArgs) -> Result<(), Error> {
    let key = parse_key(&args.key_id)?;
    let mut selection = SelectionArgs::from_aws(args.aws);
    selection.sources = args.sources;
    let config = Config::from_args(selection, process_env)?;

    let (region, account) = block_on(async {
        let aws = aws::configure(&config).await?;
        let account = match args.account_id {
            Some(account) => account,
            None => {
                let credentials = aws::resolve_credentials(&aws).await?;
                identity::caller_identity(&aws, credentials)
                    .await
                    .map_err(|detail| {
                        Error::Usage(format!(
                            "cannot find the account id ({detail}): pass --account-id"
                        ))
                    })?
                    .account
            }
        };
        Ok((aws.region, account))
    })?;

    let policy = build_policy(&PolicyInput {
        paths: &config.paths,
        maps: &config.maps,
        region: &region,
        account: &account,
        key: &key,
        check: args.check,
    });
    let mut text = serde_json::to_string_pretty(&policy)
        .map_err(|e| Error::Internal(format!("cannot encode the policy: {e}")))?;
    text.push('\n');
    write_stdout(&text)
}

/// A KMS key as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A full key ARN, used as is.
    Arn(String),
    /// A key id such as `1234abcd-...` or `mrk-...`.
    Id(String),
    /// An alias name such as `alias/aws/ssm`, or an alias ARN.
    Alias(String),
}

pub fn parse_key(text: &str) -> Result<Key, Error> {
    let invalid = |reason: &str| Error::Usage(format!("invalid --key-id {text:?}: {reason}"));
    if text.starts_with("arn:") {
        return match text.split(':').nth(5) {
            Some(resource) if resource.starts_with("key/") => Ok(Key::Arn(text.to_string())),
            Some(resource) if resource.starts_with("alias/") => Ok(Key::Alias(resource.to_string())),
            _ => Err(invalid("expected a key ARN (…:key/ID) or an alias ARN (…:alias/NAME)")),
        };
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/');
    if !text.chars().all(allowed) || text.is_empty() {
        return Err(invalid("expected a key ARN, a key id or alias/NAME"));
    }
    if text.starts_with("alias/") {
        Ok(Key::Alias(text.to_string()))
    } else if text.contains('/') {
        Err(invalid("a key id contains no '/'; an alias starts with alias/"))
    } else {
        Ok(Key::Id(text.to_string()))
    }
}

fn parse_account_id(text: &str) -> Result<String, String> {
    if text.len() == 12 && text.chars().all(|c| c.is_ascii_digit()) {
        Ok(text.to_string())
    } else {
        Err("expected 12 digits, for example 111122223333".into())
    }
}

/// Everything the policy depends on.
pub struct PolicyInput<'a> {
    /// Normalised paths, as in `Config`.
    pub paths: &'a [String],
    pub maps: &'a [MapSpec],
    pub region: &'a str,
    pub account: &'a str,
    pub key: &'a Key,
    /// Also allow DescribeParameters for `check`.
    pub check: bool,
}

/// Builds the policy document. Pure, so that tests can pin its exact shape.
pub fn build_policy(input: &PolicyInput<'_>) -> Value {
    let partition = partition(input.region);
    let parameter_arn = |suffix: &str| {
        format!("arn:{partition}:ssm:{}:{}:parameter{suffix}", input.region, input.account)
    };

    let mut by_path = Vec::new();
    let mut below = Vec::new();
    for path in input.paths {
        // The root path's ARN ends in "parameter/"; every other path has no trailing '/'.
        let (own, children) = if path == "/" {
            (parameter_arn("/"), parameter_arn("/*"))
        } else {
            (parameter_arn(path), parameter_arn(&format!("{path}/*")))
        };
        push_unique(&mut by_path, own);
        push_unique(&mut by_path, children.clone());
        push_unique(&mut below, children);
    }

    let via_ssm = json!({ "kms:ViaService": format!("ssm.{}.amazonaws.com", input.region) });
    let key_arn = |id: &str| format!("arn:{partition}:kms:{}:{}:key/{id}", input.region, input.account);
    let key_resource = match input.key {
        Key::Arn(arn) => arn.clone(),
        Key::Id(id) => key_arn(id),
        Key::Alias(_) => key_arn("*"),
    };

    // Named parameters are read with GetParameters; Secrets Manager references with
    // GetParameter, which also needs the secret itself. A secret's ARN ends in a random
    // six-character suffix, hence the "-??????".
    let mut references = Vec::new();
    let mut secrets = Vec::new();
    for map in input.maps {
        if map.is_secrets_manager() {
            push_unique(&mut references, parameter_arn(&map.name));
            let secret = map.name.trim_start_matches("/aws/reference/secretsmanager/");
            push_unique(
                &mut secrets,
                format!("arn:{partition}:secretsmanager:{}:{}:secret:{secret}-??????", input.region, input.account),
            );
        } else {
            let name = if map.name.starts_with('/') { map.name.clone() } else { format!("/{}", map.name) };
            push_unique(&mut below, parameter_arn(&name));
        }
    }

    let mut statements = Vec::new();
    if !by_path.is_empty() {
        statements.push(json!({
            "Sid": "ReadParametersByPath",
            "Effect": "Allow",
            "Action": "ssm:GetParametersByPath",
            "Resource": by_path,
        }));
    }
    if !below.is_empty() {
        statements.push(json!({
            "Sid": "ReadParametersBelowPaths",
            "Effect": "Allow",
            "Action": "ssm:GetParameters",
            "Resource": below,
        }));
    }
    if !references.is_empty() {
        statements.push(json!({
            "Sid": "ReadSecretsManagerReferences",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": references,
        }));
        statements.push(json!({
            "Sid": "ReadReferencedSecrets",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": secrets,
        }));
    }
    statements.push(json!({
        "Sid": "DecryptThroughParameterStore",
        "Effect": "Allow",
        "Action": "kms:Decrypt",
        "Resource": key_resource,
        "Condition": { "StringEquals": via_ssm },
    }));
    if input.check {
        statements.push(json!({
            "Sid": "DescribeParametersForCheck",
            "Effect": "Allow",
            "Action": "ssm:DescribeParameters",
            "Resource": "*",
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Returns the ARN partition of a region.
fn partition(region: &str) -> &'static str {
    // NOTE: kms:ViaService in the China regions may need the amazonaws.com.cn suffix; it
    // has not been checked there.
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_forms() {
        assert_eq!(parse_key("alias/aws/ssm").unwrap(), Key::Alias("alias/aws/ssm".into()));
        assert_eq!(parse_key("1234abcd-12ab").unwrap(), Key::Id("1234abcd-12ab".into()));
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd";
        assert_eq!(parse_key(arn).unwrap(), Key::Arn(arn.into()));
        assert_eq!(
            parse_key("arn:aws:kms:us-east-1:111122223333:alias/app").unwrap(),
            Key::Alias("alias/app".into())
        );
        assert!(parse_key("key/1234").is_err());
        assert!(parse_key("a b").is_err());
        assert!(parse_key("arn:aws:kms:us-east-1:1:thing").is_err());
    }

    #[test]
    fn account_id_is_twelve_digits() {
        assert!(parse_account_id("111122223333").is_ok());
        assert!(parse_account_id("11112222333").is_err());
        assert!(parse_account_id("*").is_err());
    }

    #[test]
    fn root_path_has_no_double_slash() {
        let policy = build_policy(&PolicyInput {
            paths: &["/".to_string()],
            maps: &[],
            region: "us-east-1",
            account: "111122223333",
            key: &Key::Id("k".into()),
            check: false,
        });
        let text = policy.to_string();
        assert!(text.contains("parameter/\""), "{text}");
        assert!(!text.contains("parameter//"), "{text}");
    }

    #[test]
    fn partition_follows_region() {
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition("eu-west-1"), "aws");
    }

    #[test]
    fn maps_add_their_own_resources() {
        let maps = [
            MapSpec {
                variable: "DB".into(),
                request: "/other/db:3".into(),
                name: "/other/db".into(),
            },
            MapSpec {
                variable: "SECRET".into(),
                request: "/aws/reference/secretsmanager/myapp/prod/db".into(),
                name: "/aws/reference/secretsmanager/myapp/prod/db".into(),
            },
        ];
        let policy = build_policy(&PolicyInput {
            paths: &[],
            maps: &maps,
            region: "us-east-1",
            account: "111122223333",
            key: &Key::Alias("alias/aws/ssm".into()),
            check: false,
        });
        let sids: Vec<&str> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Sid"].as_str().unwrap())
            .collect();
        assert_eq!(
            sids,
            [
                "ReadParametersBelowPaths",
                "ReadSecretsManagerReferences",
                "ReadReferencedSecrets",
                "DecryptThroughParameterStore"
            ]
        );
        let text = policy.to_string();
        assert!(text.contains("arn:aws:ssm:us-east-1:111122223333:parameter/other/db\""), "{text}");
        assert!(
            text.contains("arn:aws:secretsmanager:us-east-1:111122223333:secret:myapp/prod/db-??????"),
            "{text}"
        );
    }
}
