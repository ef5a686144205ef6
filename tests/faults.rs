//! Launches against a fake AWS endpoint on loopback, for answers moto cannot give:
//! access denied, KMS denial, odd pages, request counts and values AWS would reject.

mod common;

use common::fake::{FakeAws, Reply, page};
use common::*;
use predicates::prelude::*;

const DENIED_MESSAGE: &str = "User: arn:aws:iam::111122223333:user/qlarius-prod-app is not authorized to perform: ssm:GetParametersByPath on resource: arn:aws:ssm:us-east-1:111122223333:parameter/qlarius because no identity-based policy allows the ssm:GetParametersByPath action";

const KMS_MESSAGE: &str = "User: arn:aws:iam::111122223333:user/qlarius-prod-app is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab because no resource-based policy allows the kms:Decrypt action (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException)";

fn qlarius_page() -> String {
    let parameters = qlarius_parameters("/qlarius");
    let pairs: Vec<(&str, &str)> = parameters
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    page(&pairs, None)
}

#[test]
fn four_parameters_take_one_request() {
    let fake = FakeAws::start(vec![Reply::ok(qlarius_page())]);
    qlarius_env(&fake.url)
        .args(["--", "true"])
        .assert()
        .success();
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].target, "AmazonSSM.GetParametersByPath");
    assert_eq!(requests[0].body["Path"], "/qlarius");
    assert_eq!(requests[0].body["Recursive"], true);
    assert_eq!(requests[0].body["WithDecryption"], true);
}

#[test]
fn empty_page_with_token_keeps_paging() {
    let fake = FakeAws::start(vec![
        Reply::ok(page(&[("/p/a", "1")], Some("t1"))),
        Reply::ok(page(&[], Some("t2"))),
        Reply::ok(page(&[("/p/b", "2")], None)),
    ]);
    qlarius_env(&fake.url)
        .args(["--path", "/p", "--", "sh", "-c", "printf %s%s \"$A\" \"$B\""])
        .assert()
        .success()
        .stdout("12");
    let tokens: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| r.body["NextToken"].as_str().map(str::to_string))
        .collect();
    assert_eq!(tokens, [None, Some("t1".into()), Some("t2".into())]);
}

#[test]
fn repeated_token_is_a_protocol_error() {
    let fake = FakeAws::start(vec![Reply::ok(page(&[("/p/a", "1")], Some("same")))]);
    qlarius_env(&fake.url)
        .args(["--path", "/p", "--", "true"])
        .assert()
        .code(76)
        .stderr(predicate::str::contains("NextToken repeated"));
    assert_eq!(fake.count("GetParametersByPath"), 2);
}

#[test]
fn access_denied_names_action_resource_and_principal() {
    let fake = FakeAws::start(vec![Reply::error(400, "AccessDeniedException", DENIED_MESSAGE)]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    qlarius_env(&fake.url)
        .args(["--", "touch"])
        .arg(&marker)
        .assert()
        .code(77)
        .stderr(predicate::str::contains(
            "qlarius-env: error: GetParametersByPath /qlarius failed: AccessDeniedException: User: arn:aws:iam::111122223333:user/qlarius-prod-app is not authorized",
        ))
        .stderr(predicate::str::contains("(request id fake-request-400)"))
        .stderr(predicate::str::contains(
            "hint: the caller needs ssm:GetParametersByPath on arn:aws:ssm:us-east-1:*:parameter/qlarius;",
        ));
    assert!(!marker.exists(), "the command ran");
    assert_eq!(fake.count("GetParametersByPath"), 1, "access denied is not retried");
}

#[test]
fn kms_denial_hints_at_key_users() {
    let fake = FakeAws::start(vec![Reply::error(400, "AccessDeniedException", KMS_MESSAGE)]);
    qlarius_env(&fake.url)
        .args(["--", "true"])
        .assert()
        .code(77)
        .stderr(predicate::str::contains("kms:Decrypt on resource: arn:aws:kms:us-east-1"))
        .stderr(predicate::str::contains("add the IAM user as a key user"))
        .stderr(predicate::str::contains("aws/ssm cannot be edited"));
}

#[test]
fn invalid_key_id_is_a_kms_error() {
    let fake = FakeAws::start(vec![Reply::error(
        400,
        "InvalidKeyId",
        "The query key ID isn't valid.",
    )]);
    qlarius_env(&fake.url)
        .args(["--", "true"])
        .assert()
        .code(77)
        .stderr(predicate::str::contains("InvalidKeyId"))
        .stderr(predicate::str::contains("kms:Decrypt"));
}

#[test]
fn nul_byte_in_value_names_parameter() {
    let fake = FakeAws::start(vec![Reply::ok(page(&[("/p/bad", "before\u{0}after")], None))]);
    qlarius_env(&fake.url)
        .args(["--path", "/p", "--", "true"])
        .assert()
        .code(65)
        .stderr(predicate::str::contains(
            "parameter /p/bad has a value with a NUL byte",
        ))
        .stderr(predicate::str::contains("before").not());
}

#[test]
fn empty_value_is_set_not_dropped() {
    // Real Parameter Store rejects empty values, but an emulator may store one.
    let fake = FakeAws::start(vec![Reply::ok(page(
        &[("/p/optional/flag", ""), ("/p/other", "x")],
        None,
    ))]);
    let mut command = qlarius_env(&fake.url);
    command.args(["--path", "/p"]);
    assert_eq!(value_seen_by_child(command, "OPTIONAL_FLAG"), b"");
}

#[test]
fn echoed_value_is_redacted_from_errors() {
    let canary = "canary-7f3e9a1c-echoed";
    let fake = FakeAws::start(vec![
        Reply::ok(page(&[("/p/a", canary)], Some("t1"))),
        Reply::error(400, "ValidationException", &format!("bad token near {canary}")),
    ]);
    qlarius_env(&fake.url)
        .args(["--path", "/p", "--", "true"])
        .assert()
        .code(65)
        .stderr(predicate::str::contains("bad token near [redacted]"))
        .stderr(predicate::str::contains(canary).not());
}

#[test]
fn control_characters_in_errors_are_escaped() {
    let fake = FakeAws::start(vec![Reply::error(
        400,
        "AccessDeniedException",
        "denied\u{1b}[2J\nfake line",
    )]);
    let output = qlarius_env(&fake.url).args(["--", "true"]).output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    assert!(stderr.contains("denied\\u{1b}[2J\\nfake line"), "{stderr:?}");
}

#[test]
fn no_region_fails_before_any_request() {
    let fake = FakeAws::start(vec![Reply::ok(qlarius_page())]);
    qlarius_env(&fake.url)
        .env_remove("AWS_REGION")
        .args(["--", "true"])
        .assert()
        .code(78)
        .stderr(predicate::str::contains("no AWS region is configured"))
        .stderr(predicate::str::contains("AWS_DEFAULT_REGION"));
    assert!(fake.requests().is_empty());
}

#[test]
fn default_region_variable_is_honoured() {
    let fake = FakeAws::start(vec![Reply::ok(qlarius_page())]);
    qlarius_env(&fake.url)
        .env_remove("AWS_REGION")
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .args(["--", "true"])
        .assert()
        .success();
}

#[test]
fn no_credentials_fails_fast_and_lists_sources() {
    let fake = FakeAws::start(vec![Reply::ok(qlarius_page())]);
    qlarius_env(&fake.url)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["--", "true"])
        .assert()
        .code(78)
        .stderr(predicate::str::contains("no AWS credentials found"))
        .stderr(predicate::str::contains("environment variables (AWS_ACCESS_KEY_ID not set)"))
        .stderr(predicate::str::contains("instance metadata (disabled by AWS_EC2_METADATA_DISABLED)"));
    assert!(fake.requests().is_empty());
}

#[test]
fn gateway_errors_without_aws_body_are_unavailable() {
    for (status, body) in [(502, ""), (503, "<html><body>Service Unavailable</body></html>")] {
        let fake = FakeAws::start(vec![Reply::Json { status, body: body.into() }]);
        qlarius_env(&fake.url)
            .env("AWS_MAX_ATTEMPTS", "2")
            .args(["--", "true"])
            .assert()
            .code(69)
            .stderr(predicate::str::contains(format!("HTTP {status}")));
    }
}

#[test]
fn names_outside_the_path_are_rejected() {
    for stray in ["/ux/a", "/u"] {
        let fake = FakeAws::start(vec![Reply::ok(page(&[("/u/fine", "1"), (stray, "2")], None))]);
        qlarius_env(&fake.url)
            .args(["--path", "/u", "--", "true"])
            .assert()
            .code(76)
            .stderr(predicate::str::contains(format!("returned {stray}, which is not below the path")));
    }
}
