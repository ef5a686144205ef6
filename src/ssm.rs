//! Parameter Store calls: pagination, decryption and error classes.

use crate::aws::Aws;
use crate::error::{AwsError, AwsErrorClass, Error};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::ParameterStringFilter;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::operation::RequestId;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashSet;

/// A parameter as loaded: the value is held as a secret from the moment it leaves the SDK.
pub struct Parameter {
    pub name: String,
    pub value: SecretString,
    /// `String`, `StringList` or `SecureString`.
    pub kind: String,
    pub version: i64,
}

impl Parameter {
    /// Copies the parameter, for a value that two `--map`s name.
    pub fn duplicate(&self) -> Parameter {
        Parameter {
            name: self.name.clone(),
            value: SecretString::from(self.value.expose_secret().to_owned()),
            kind: self.kind.clone(),
            version: self.version,
        }
    }
}

/// Builds the Parameter Store client with credentials already resolved.
pub fn client(aws: &Aws, credentials: SharedCredentialsProvider) -> Client {
    let mut builder = aws_sdk_ssm::config::Builder::from(&aws.sdk_config)
        .credentials_provider(credentials)
        .http_client(aws.ssm_http_client.clone())
        .interceptor(crate::aws::RetryLog);
    if let Some(url) = &aws.endpoint_url {
        builder = builder.endpoint_url(url);
    }
    Client::from_conf(builder.build())
}

/// The result of walking one path.
pub struct PathContents {
    pub parameters: Vec<Parameter>,
    pub requests: u32,
}

/// Reads every parameter under `path`, recursively and decrypted, following `NextToken`
/// to the end. A page may be short or even empty while a token remains, so only a missing
/// token ends the walk.
///
/// With `label`, Parameter Store returns the labelled version of each parameter and leaves
/// out parameters that carry no such label.
pub async fn get_parameters_by_path(
    client: &Client,
    aws: &Aws,
    path: &str,
    label: Option<&str>,
) -> Result<PathContents, Error> {
    let mut parameters = Vec::new();
    let mut requests = 0;
    let mut next_token: Option<String> = None;
    let mut seen_tokens = HashSet::new();

    loop {
        let result = client
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .with_decryption(true)
            .max_results(10)
            .set_parameter_filters(label.map(label_filter))
            .set_next_token(next_token.take())
            .send()
            .await;
        requests += 1;
        let page = result.map_err(|e| {
            classify(e, "GetParametersByPath", "ssm:GetParametersByPath", path, aws, &parameters)
        })?;

        for parameter in page.parameters.unwrap_or_default() {
            parameters.push(take_parameter(parameter, "GetParametersByPath", path)?);
        }

        match page.next_token {
            Some(token) if !token.is_empty() => {
                if !seen_tokens.insert(token.clone()) {
                    return Err(protocol_error(path, "NextToken repeated; the walk would never end".into()));
                }
                next_token = Some(token);
            }
            _ => break,
        }
    }

    Ok(PathContents {
        parameters,
        requests,
    })
}

pub fn label_filter(label: &str) -> Vec<ParameterStringFilter> {
    vec![
        ParameterStringFilter::builder()
            .key("Label")
            .option("Equals")
            .values(label)
            .build()
            .expect("key is set"),
    ]
}

/// Moves the value out of an SDK parameter into a secret, so no plain copy outlives it.
fn take_parameter(
    mut parameter: aws_sdk_ssm::types::Parameter,
    operation: &'static str,
    subject: &str,
) -> Result<Parameter, Error> {
    let name = parameter.name.take().unwrap_or_default();
    let Some(value) = parameter.value.take() else {
        return Err(Error::Protocol {
            operation,
            subject: subject.to_string(),
            detail: format!("parameter {name} has no value"),
        });
    };
    Ok(Parameter {
        name,
        value: SecretString::from(value),
        kind: parameter
            .r#type
            .map(|t| t.as_str().to_string())
            .unwrap_or_else(|| "String".into()),
        version: parameter.version,
    })
}

/// Parameters read by name, and the names Parameter Store reported as invalid.
pub struct NamedContents {
    pub parameters: Vec<Parameter>,
    pub invalid: Vec<String>,
    pub requests: u32,
}

/// Reads up to ten named parameters, selectors included, in one decrypted GetParameters
/// request. Returned names have no selector: AWS reports it in a separate field that
/// emulators leave out, so callers send each name at most once per request and match the
/// results by name.
pub async fn get_parameters(client: &Client, aws: &Aws, names: &[String]) -> Result<NamedContents, Error> {
    debug_assert!(names.len() <= 10, "GetParameters takes at most 10 names");
    let subject = names.join(", ");
    let output = client
        .get_parameters()
        .set_names(Some(names.to_vec()))
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| classify(e, "GetParameters", "ssm:GetParameters", &subject, aws, &[]))?;
    let mut parameters = Vec::new();
    for parameter in output.parameters.unwrap_or_default() {
        parameters.push(take_parameter(parameter, "GetParameters", &subject)?);
    }
    Ok(NamedContents {
        parameters,
        invalid: output.invalid_parameters.unwrap_or_default(),
        requests: 1,
    })
}

/// Reads one Secrets Manager secret through its Parameter Store reference. AWS requires
/// decryption for references, and GetParametersByPath does not list them.
pub async fn get_secret_reference(client: &Client, aws: &Aws, reference: &str) -> Result<Parameter, Error> {
    let output = client
        .get_parameter()
        .name(reference)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            classify(
                e,
                "GetParameter",
                "ssm:GetParameter and secretsmanager:GetSecretValue",
                reference,
                aws,
                &[],
            )
        })?;
    let parameter = output.parameter.ok_or_else(|| Error::Protocol {
        operation: "GetParameter",
        subject: reference.to_string(),
        detail: "the response holds no parameter".into(),
    })?;
    let mut parameter = take_parameter(parameter, "GetParameter", reference)?;
    parameter.name = reference.to_string();
    Ok(parameter)
}

/// Asks whether `name` is a single parameter, without decrypting it. Used only to explain
/// an empty path, so any failure counts as "no".
pub async fn is_parameter(client: &Client, name: &str) -> bool {
    client
        .get_parameters()
        .names(name)
        .with_decryption(false)
        .send()
        .await
        .is_ok_and(|out| !out.parameters().is_empty())
}

fn protocol_error(path: &str, detail: String) -> Error {
    Error::Protocol {
        operation: "GetParametersByPath",
        subject: path.to_string(),
        detail,
    }
}

/// Joins an error and its sources into one line, as `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Turns an SDK error into an operator's error: the AWS code, message and request id for
/// service errors, and the endpoint for connection failures.
///
/// `loaded` contains the values read so far; any of them echoed in an error message is
/// replaced, so a hostile or buggy endpoint cannot make qlarius-env print a secret.
pub fn classify<E>(
    error: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    operation: &'static str,
    action: &'static str,
    subject: &str,
    aws: &Aws,
    loaded: &[Parameter],
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let endpoint = aws
        .endpoint_url
        .clone()
        .unwrap_or_else(|| format!("https://ssm.{}.amazonaws.com", aws.region));

    match error {
        SdkError::TimeoutError(_) => Error::TimedOut {
            waiting_on: format!("{operation} {subject} at {endpoint}"),
            budget: aws
                .sdk_config
                .timeout_config()
                .and_then(|t| t.operation_timeout())
                .unwrap_or_default(),
        },
        SdkError::DispatchFailure(failure) => {
            let detail = failure
                .as_connector_error()
                .map(|e| error_chain(e))
                .unwrap_or_else(|| "the request could not be sent".into());
            if failure.is_timeout() {
                Error::TimedOut {
                    waiting_on: format!("{operation} {subject} at {endpoint} ({})", redact(&detail, loaded)),
                    budget: aws
                        .sdk_config
                        .timeout_config()
                        .and_then(|t| t.operation_timeout())
                        .unwrap_or_default(),
                }
            } else {
                Error::Unreachable {
                    endpoint,
                    detail: redact(&detail, loaded),
                }
            }
        }
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            let detail = redact(&error_chain(&SdkError::<E, _>::ResponseError(response)), loaded);
            if status >= 500 {
                // A proxy or load balancer in front of Parameter Store failing, with a body
                // that is not AWS's: the service is unavailable, not speaking nonsense.
                Error::Aws(Box::new(AwsError {
                    operation,
                    subject: subject.to_string(),
                    class: AwsErrorClass::ServerError,
                    code: None,
                    message: None,
                    request_id: None,
                    http_status: Some(status),
                    action,
                    resource: None,
                }))
            } else {
                Error::Protocol {
                    operation,
                    subject: subject.to_string(),
                    detail: format!("HTTP {status}: {detail}"),
                }
            }
        }
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let error = context.err();
            let code = error.code().map(str::to_string);
            let message = error.message().map(|m| redact(m, loaded));
            let request_id = error
                .meta()
                .request_id()
                .map(str::to_string)
                .or_else(|| context.raw().headers().get("x-amzn-requestid").map(str::to_string));
            let class = class_of(code.as_deref(), message.as_deref(), status);
            let resource = resource_arn(&aws.region, subject);
            Error::Aws(Box::new(AwsError {
                operation,
                subject: subject.to_string(),
                class,
                code,
                message,
                request_id,
                http_status: Some(status),
                action,
                resource,
            }))
        }
        other => Error::Internal(format!(
            "{operation} {subject}: {}",
            redact(&error_chain(&other), loaded)
        )),
    }
}

/// Returns the ARN that IAM checks for a request about `subject`: the path itself for
/// GetParametersByPath, the parameter for the other calls, and the secret for a Secrets
/// Manager reference. Several names (a GetParameters batch) have no single ARN.
fn resource_arn(region: &str, subject: &str) -> Option<String> {
    if subject.contains(", ") {
        return None;
    }
    if let Some(secret) = subject.strip_prefix("/aws/reference/secretsmanager/") {
        return Some(format!("arn:aws:secretsmanager:{region}:*:secret:{secret}-*"));
    }
    let name = subject.split(':').next().unwrap_or(subject);
    let separator = if name.starts_with('/') { "" } else { "/" };
    Some(format!("arn:aws:ssm:{region}:*:parameter{separator}{name}"))
}

fn class_of(code: Option<&str>, message: Option<&str>, status: u16) -> AwsErrorClass {
    let message = message.unwrap_or_default();
    let mentions_kms = message.contains("kms:") || message.contains("KMS") || message.contains("ciphertext");
    match code.unwrap_or_default() {
        "InvalidKeyId" | "KMSAccessDeniedException" | "KMSDisabledException"
        | "KMSInvalidStateException" | "KMSNotFoundException" => AwsErrorClass::KmsDenied,
        "AccessDeniedException" | "AccessDenied" if mentions_kms => AwsErrorClass::KmsDenied,
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => {
            AwsErrorClass::AccessDenied
        }
        "ThrottlingException" | "Throttling" | "TooManyRequestsException"
        | "RequestLimitExceeded" | "TooManyUpdates" => AwsErrorClass::Throttled,
        "ExpiredTokenException" | "ExpiredToken" | "RequestExpired" => {
            AwsErrorClass::ExpiredCredentials
        }
        "InvalidSignatureException" | "SignatureDoesNotMatch"
            if message.contains("Signature expired") || message.contains("Signature not yet current") =>
        {
            AwsErrorClass::ClockSkew
        }
        "UnrecognizedClientException" | "InvalidClientTokenId" | "InvalidSignatureException"
        | "SignatureDoesNotMatch" | "IncompleteSignature" | "MissingAuthenticationToken" => {
            AwsErrorClass::InvalidCredentials
        }
        "ParameterNotFound" | "ParameterVersionNotFound" => AwsErrorClass::NotFound,
        "ValidationException" | "InvalidFilterKey" | "InvalidFilterOption"
        | "InvalidFilterValue" | "InvalidNextToken" => AwsErrorClass::Validation,
        _ if status >= 500 => AwsErrorClass::ServerError,
        "InternalServerError" | "ServiceUnavailable" => AwsErrorClass::ServerError,
        _ => AwsErrorClass::Other,
    }
}

fn redact(text: &str, loaded: &[Parameter]) -> String {
    crate::error::redact(text, loaded.iter().map(|p| &p.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_messages_are_decrypt_denials() {
        let message = "User: arn:aws:iam::1:user/x is not authorized to perform: kms:Decrypt";
        assert_eq!(
            class_of(Some("AccessDeniedException"), Some(message), 400),
            AwsErrorClass::KmsDenied
        );
        assert_eq!(class_of(Some("InvalidKeyId"), None, 400), AwsErrorClass::KmsDenied);
    }

    #[test]
    fn codes_map_to_classes() {
        let cases = [
            ("AccessDeniedException", AwsErrorClass::AccessDenied),
            ("ThrottlingException", AwsErrorClass::Throttled),
            ("UnrecognizedClientException", AwsErrorClass::InvalidCredentials),
            ("ExpiredTokenException", AwsErrorClass::ExpiredCredentials),
            ("ValidationException", AwsErrorClass::Validation),
            ("SomethingNew", AwsErrorClass::Other),
        ];
        for (code, class) in cases {
            assert_eq!(class_of(Some(code), Some("no detail"), 400), class, "{code}");
        }
        assert_eq!(class_of(None, None, 503), AwsErrorClass::ServerError);
    }

    #[test]
    fn signature_expiry_means_clock_skew() {
        let message = "Signature expired: 20260101T000000Z is now earlier than 20260101T001000Z";
        assert_eq!(
            class_of(Some("InvalidSignatureException"), Some(message), 400),
            AwsErrorClass::ClockSkew
        );
    }

    #[test]
    fn redact_hides_loaded_values() {
        let loaded = [Parameter {
            name: "/p/x".into(),
            value: SecretString::from("canary-value-1234"),
            kind: "SecureString".into(),
            version: 1,
        }];
        assert_eq!(
            redact("bad value canary-value-1234 here", &loaded),
            "bad value [redacted] here"
        );
    }

    #[test]
    fn resource_is_what_iam_checks() {
        let arn = |subject| resource_arn("eu-west-1", subject);
        assert_eq!(arn("/qlarius").as_deref(), Some("arn:aws:ssm:eu-west-1:*:parameter/qlarius"));
        assert_eq!(arn("/").as_deref(), Some("arn:aws:ssm:eu-west-1:*:parameter/"));
        assert_eq!(arn("/a/b:3").as_deref(), Some("arn:aws:ssm:eu-west-1:*:parameter/a/b"));
        assert_eq!(arn("flat").as_deref(), Some("arn:aws:ssm:eu-west-1:*:parameter/flat"));
        assert_eq!(
            arn("/aws/reference/secretsmanager/app/db").as_deref(),
            Some("arn:aws:secretsmanager:eu-west-1:*:secret:app/db-*")
        );
        assert_eq!(arn("/a, /b"), None);
    }
}
