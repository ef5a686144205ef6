//! The caller's identity from STS GetCallerIdentity, for `check` and for `policy`'s
//! account id. GetCallerIdentity needs no IAM permission, so any valid credentials can
//! call it.

use crate::aws::Aws;
use crate::error::sanitize;
use crate::ssm::error_chain;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;

/// The account, ARN and user id behind a set of credentials.
#[derive(Debug, serde::Serialize)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// Returns the STS endpoint: `AWS_ENDPOINT_URL_STS`, else the Parameter Store endpoint
/// when one is configured (emulators such as moto and LocalStack serve every service on
/// one port), else `None` for the region's STS endpoint.
pub fn sts_endpoint(aws: &Aws) -> Option<String> {
    let ignore = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let from_env = std::env::var("AWS_ENDPOINT_URL_STS")
        .ok()
        .filter(|url| !ignore && !url.trim().is_empty());
    from_env.or_else(|| aws.endpoint_url.clone())
}

/// Calls GetCallerIdentity. The error is one line for a report: the AWS code, message and
/// request id, or why the request could not be sent.
pub async fn caller_identity(aws: &Aws, credentials: SharedCredentialsProvider) -> Result<CallerIdentity, String> {
    let mut builder = aws_sdk_sts::config::Builder::from(&aws.sdk_config).credentials_provider(credentials);
    let endpoint = sts_endpoint(aws);
    if let Some(url) = &endpoint {
        builder = builder.endpoint_url(url);
    }
    let client = aws_sdk_sts::Client::from_conf(builder.build());

    let output = client
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| describe_error(e, endpoint.as_deref().unwrap_or("the region's STS endpoint")))?;
    Ok(CallerIdentity {
        account: output.account.unwrap_or_default(),
        arn: output.arn.unwrap_or_default(),
        user_id: output.user_id.unwrap_or_default(),
    })
}

fn describe_error<E>(error: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>, endpoint: &str) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = match &error {
        SdkError::ServiceError(context) => {
            let inner = context.err();
            let mut line = format!(
                "GetCallerIdentity failed: {}",
                inner.code().unwrap_or("unknown error code")
            );
            if let Some(message) = inner.message() {
                line.push_str(&format!(": {message}"));
            }
            if let Some(id) = inner.meta().request_id() {
                line.push_str(&format!(" (request id {id})"));
            }
            line
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            format!("cannot reach STS at {endpoint}: {}", error_chain(&error))
        }
        _ => format!("GetCallerIdentity failed: {}", error_chain(&error)),
    };
    sanitize(&text)
}
