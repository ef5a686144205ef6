//! Every credential source of the default chain, each against a fake on loopback: static
//! keys, profiles (static, credential_process, role_arn with STS, SSO), web identity,
//! container credentials and the instance metadata service.

mod common;

use common::fake::{FakeAws, Reply, page};
use common::http::{HttpReply, HttpRequest, HttpServer, Proxy};
use common::*;
use std::path::Path;

const PATH: &str = "/app";
/// The SHA-1 of the SSO session name `corp`, the name of its cached token file.
const CORP_SESSION_CACHE_FILE: &str = "ee0bfd2552fbd840c02cc48b6e823320543c450f.json";

fn parameter_store() -> FakeAws {
    FakeAws::start(vec![Reply::ok(page(&[("/app/db-password", "fake-db-password")], None))])
}

/// Returns a command without the static keys that `qlarius_env` sets.
fn without_keys(endpoint: &str) -> assert_cmd::Command {
    let mut command = qlarius_env(endpoint);
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    command
}

fn run(mut command: assert_cmd::Command) -> (Option<i32>, String) {
    let output = command.output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Returns the access key id that signed the one Parameter Store request.
fn signing_key(fake: &FakeAws) -> String {
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let authorization = requests[0].header("authorization").expect("signed request");
    let credential = authorization.split("Credential=").nth(1).expect("credential scope");
    credential.split('/').next().unwrap().to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Returns a form-encoded field of an STS query request.
fn form_field<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .body
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// Starts a fake STS that replies to AssumeRole and AssumeRoleWithWebIdentity with session
/// credentials whose access key id is `key`.
fn sts(key: &'static str) -> HttpServer {
    HttpServer::start(move |request| {
        let action = form_field(request, "Action").unwrap_or_default().to_string();
        let credentials = format!(
            "<Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>fake-sts-secret</SecretAccessKey>\
             <SessionToken>fake-sts-session</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
             <AssumedRoleUser><AssumedRoleId>AROAFAKE:qlarius</AssumedRoleId>\
             <Arn>arn:aws:sts::111122223333:assumed-role/myapp-ssm/qlarius</Arn></AssumedRoleUser>"
        );
        let ns = "https://sts.amazonaws.com/doc/2011-06-15/";
        let metadata = "<ResponseMetadata><RequestId>fake-sts-request</RequestId></ResponseMetadata>";
        match action.as_str() {
            "AssumeRole" => HttpReply::xml(format!(
                "<AssumeRoleResponse xmlns=\"{ns}\"><AssumeRoleResult>{credentials}</AssumeRoleResult>{metadata}</AssumeRoleResponse>"
            )),
            "AssumeRoleWithWebIdentity" => HttpReply::xml(format!(
                "<AssumeRoleWithWebIdentityResponse xmlns=\"{ns}\"><AssumeRoleWithWebIdentityResult>{credentials}\
                 <SubjectFromWebIdentityToken>system:serviceaccount:app:app</SubjectFromWebIdentityToken>\
                 </AssumeRoleWithWebIdentityResult>{metadata}</AssumeRoleWithWebIdentityResponse>"
            )),
            _ => HttpReply::text(400, "unexpected action"),
        }
    })
}

fn container_credentials_json(key: &str) -> String {
    serde_json::json!({
        "AccessKeyId": key,
        "SecretAccessKey": "fake-container-secret",
        "Token": "fake-container-session",
        "Expiration": "2099-01-01T00:00:00Z"
    })
    .to_string()
}

/// Starts a fake IMDSv2: a token from PUT /latest/api/token, then the role name and
/// credentials, each only with the token. With `answer_token: false` the token request
/// gets no response.
fn metadata_service(answer_token: bool) -> HttpServer {
    HttpServer::start(move |request| {
        let token_ok = request.header("x-aws-ec2-metadata-token") == Some("fake-imds-token");
        match (request.method.as_str(), request.target.as_str()) {
            ("PUT", "/latest/api/token") if answer_token => {
                HttpReply::text(200, "fake-imds-token").with_header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            }
            ("PUT", "/latest/api/token") => HttpReply::Stall,
            (_, _) if !token_ok => HttpReply::text(401, ""),
            ("GET", "/latest/meta-data/iam/security-credentials/") => HttpReply::text(200, "app-role"),
            ("GET", "/latest/meta-data/iam/security-credentials/app-role") => HttpReply::json(
                serde_json::json!({
                    "Code": "Success",
                    "LastUpdated": "2026-01-01T00:00:00Z",
                    "Type": "AWS-HMAC",
                    "AccessKeyId": "ASIAINSTANCE",
                    "SecretAccessKey": "fake-instance-secret",
                    "Token": "fake-instance-session",
                    "Expiration": "2099-01-01T00:00:00Z"
                })
                .to_string(),
            ),
            _ => HttpReply::text(404, ""),
        }
    })
}

#[test]
fn static_keys_sign_requests() {
    let fake = parameter_store();
    let mut command = qlarius_env(&fake.url);
    command.args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "AKIDTESTONLY");
}

#[test]
fn profile_static_keys() {
    let fake = parameter_store();
    let dir = tempfile::tempdir().unwrap();
    let credentials = write(
        dir.path(),
        "credentials",
        "[dev]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = fake-profile-secret\n",
    );
    let mut command = without_keys(&fake.url);
    command
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .args(["--profile", "dev", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "AKIDPROFILE");
}

#[test]
fn profile_credential_process() {
    let fake = parameter_store();
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "issue-credentials",
        "#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": \"AKIDPROCESS\", \"SecretAccessKey\": \"fake-process-secret\"}'\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = write(dir.path(), "config", &format!("[profile tool]\ncredential_process = {script}\n"));
    let mut command = without_keys(&fake.url);
    command
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_PROFILE", "tool")
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "AKIDPROCESS");
}

#[test]
fn profile_role_arn_assumes_role() {
    let fake = parameter_store();
    let sts = sts("ASIAASSUMED");
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config",
        "[profile base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = fake-base-secret\n\
         [profile app]\nrole_arn = arn:aws:iam::111122223333:role/myapp-ssm\nsource_profile = base\n",
    );
    let mut command = without_keys(&fake.url);
    command
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_ENDPOINT_URL_STS", &sts.url)
        .args(["--profile", "app", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "ASIAASSUMED");
    let requests = sts.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(form_field(&requests[0], "Action"), Some("AssumeRole"));
    assert!(requests[0].header("authorization").unwrap().contains("Credential=AKIDBASE/"));
}

#[test]
fn web_identity_assumes_role() {
    let fake = parameter_store();
    let sts = sts("ASIAWEBIDENTITY");
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "fake-oidc-token");
    let mut command = without_keys(&fake.url);
    command
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/myapp-ssm")
        .env("AWS_ENDPOINT_URL_STS", &sts.url)
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "ASIAWEBIDENTITY");
    let requests = sts.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(form_field(&requests[0], "Action"), Some("AssumeRoleWithWebIdentity"));
    assert_eq!(form_field(&requests[0], "WebIdentityToken"), Some("fake-oidc-token"));
}

#[test]
fn unreadable_token_file_is_named() {
    let fake = parameter_store();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let mut command = without_keys(&fake.url);
    command
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &missing)
        .env("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/myapp-ssm")
        .env("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9")
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("web identity"), "{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
    assert!(fake.requests().is_empty());
}

#[test]
fn container_credentials_without_token() {
    let fake = parameter_store();
    let endpoint = HttpServer::start(|_| HttpReply::json(container_credentials_json("ASIACONTAINER")));
    let imds = metadata_service(true);
    // An image that declares the static keys with empty values, as some Dockerfiles do.
    let mut command = qlarius_env(&fake.url);
    command
        .env("AWS_ACCESS_KEY_ID", "")
        .env("AWS_SECRET_ACCESS_KEY", "")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/v2/credentials/task", endpoint.url))
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "ASIACONTAINER");
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target, "/v2/credentials/task");
    assert!(requests[0].header("authorization").is_none());
    assert!(imds.requests().is_empty(), "instance metadata was asked");
    assert!(
        stderr.contains("warning: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set but empty"),
        "{stderr}"
    );
}

#[test]
fn container_credentials_with_token_file() {
    let fake = parameter_store();
    let endpoint = HttpServer::start(|_| HttpReply::json(container_credentials_json("ASIAPODIDENTITY")));
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "eks-pod-identity-token", "fake-pod-identity-token");
    let mut command = without_keys(&fake.url);
    command
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/v1/credentials", endpoint.url))
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token)
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "ASIAPODIDENTITY");
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("authorization"), Some("fake-pod-identity-token"));
}

#[test]
fn instance_metadata_v2_not_proxied() {
    let fake = parameter_store();
    let imds = metadata_service(true);
    let proxy = Proxy::start(None);
    // The metadata endpoint's host is added to the no-proxy rules, so it must differ from
    // the Parameter Store fake's host for the proxy to see anything.
    let imds_url = imds.url.replace("127.0.0.1", "localhost");
    let mut command = without_keys(&fake.url);
    command
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds_url)
        .env("HTTP_PROXY", &proxy.url)
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "ASIAINSTANCE");
    let requests = imds.requests();
    assert_eq!(requests[0].method, "PUT");
    assert!(requests[0].header("x-aws-ec2-metadata-token-ttl-seconds").is_some());
    assert!(requests[1..].iter().all(|r| r.header("x-aws-ec2-metadata-token") == Some("fake-imds-token")));
    let proxied: Vec<String> = proxy.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(proxied, [format!("{}/", fake.url)], "only Parameter Store goes through the proxy");
}

#[test]
fn silent_metadata_token_hits_budget() {
    let fake = parameter_store();
    let imds = metadata_service(false);
    let mut command = without_keys(&fake.url);
    command
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)
        .args(["--timeout", "500ms", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    // The metadata client's own read timeout is 1 s, so the 500 ms budget runs out first.
    assert_eq!(code, Some(75), "{stderr}");
    assert!(
        stderr.contains(&format!("timed out after 500ms waiting for instance metadata at {}", imds.url)),
        "{stderr}"
    );
    assert!(stderr.contains("hop limit"), "{stderr}");
    assert!(stderr.contains("host networking"), "{stderr}");
    assert!(stderr.contains("task or pod its own role"), "{stderr}");
    assert!(fake.requests().is_empty());
}

#[test]
fn silent_metadata_token_gives_up() {
    // With the default budget the metadata client gives up on its own, after its 1 s
    // read timeout.
    let fake = parameter_store();
    let imds = metadata_service(false);
    let mut command = without_keys(&fake.url);
    command
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains(&format!("instance metadata at {}", imds.url)), "{stderr}");
    assert!(stderr.contains("hop limit"), "{stderr}");
    assert!(imds.requests().iter().all(|r| r.method == "PUT"));
}

#[test]
fn missing_credentials_name_each_source() {
    let mut command = without_keys("http://127.0.0.1:9");
    command.args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(78), "{stderr}");
    for expected in [
        "environment variables (AWS_ACCESS_KEY_ID not set)",
        "profile default (not configured)",
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE not set)",
        "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI not set)",
        "instance metadata (disabled by AWS_EC2_METADATA_DISABLED)",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in {stderr}");
    }
}

fn sso_home(expires_at: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(aws.join("sso/cache")).unwrap();
    write(
        &aws,
        "config",
        "[profile dev]\nsso_session = corp\nsso_account_id = 111122223333\nsso_role_name = Developer\n\
         region = eu-west-1\n[sso-session corp]\nsso_start_url = https://corp.example.invalid/start\n\
         sso_region = eu-west-1\nsso_registration_scopes = sso:account:access\n",
    );
    let token = serde_json::json!({
        "accessToken": "fake-sso-access-token",
        "expiresAt": expires_at,
        "region": "eu-west-1",
        "startUrl": "https://corp.example.invalid/start"
    });
    write(&aws.join("sso/cache"), CORP_SESSION_CACHE_FILE, &token.to_string());
    home
}

fn sso_command(endpoint: &str, home: &Path, portal: &str) -> assert_cmd::Command {
    let mut command = without_keys(endpoint);
    command
        .env_remove("AWS_REGION")
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join(".aws/config"))
        .env("AWS_PROFILE", "dev")
        .env("AWS_ENDPOINT_URL_SSO", portal)
        .env("AWS_ENDPOINT_URL_SSO_OIDC", portal)
        .args(["--path", PATH, "--", "true"]);
    command
}

#[test]
fn sso_session_profile_signs_in_profile_region() {
    let fake = parameter_store();
    let portal = HttpServer::start(|request| {
        if request.target.starts_with("/federation/credentials")
            && request.header("x-amz-sso_bearer_token") == Some("fake-sso-access-token")
        {
            HttpReply::json(
                serde_json::json!({"roleCredentials": {
                    "accessKeyId": "ASIASSO",
                    "secretAccessKey": "fake-sso-secret",
                    "sessionToken": "fake-sso-session",
                    "expiration": 4102444800000u64
                }})
                .to_string(),
            )
        } else {
            HttpReply::text(403, "")
        }
    });
    let home = sso_home("2099-01-01T00:00:00Z");
    let (code, stderr) = run(sso_command(&fake.url, home.path(), &portal.url));

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "ASIASSO");
    let authorization = fake.requests()[0].header("authorization").unwrap().to_string();
    assert!(authorization.contains("/eu-west-1/ssm/aws4_request"), "{authorization}");
    assert_eq!(portal.requests().len(), 1);
}

#[test]
fn expired_sso_token_says_how_to_refresh() {
    let fake = parameter_store();
    let portal = HttpServer::start(|_| HttpReply::text(403, ""));
    let home = sso_home("2020-01-01T00:00:00Z");
    let (code, stderr) = run(sso_command(&fake.url, home.path(), &portal.url));

    assert_eq!(code, Some(77), "{stderr}");
    assert!(stderr.contains("profile dev"), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(stderr.contains("aws sso login --profile dev"), "{stderr}");
    assert!(fake.requests().is_empty());
    assert!(portal.requests().is_empty());
}

#[test]
fn expired_session_token_says_how_to_refresh() {
    let fake = FakeAws::start(vec![Reply::error(
        400,
        "ExpiredTokenException",
        "The security token included in the request is expired",
    )]);
    let mut command = qlarius_env(&fake.url);
    command
        .env("AWS_SESSION_TOKEN", "fake-expired-session")
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(77), "{stderr}");
    assert!(stderr.contains("ExpiredTokenException"), "{stderr}");
    assert!(stderr.contains("aws sso login --profile"), "{stderr}");
    assert_eq!(fake.count("GetParametersByPath"), 1);
}

#[test]
fn profile_flag_wins_over_environment_keys() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = write(
        dir.path(),
        "credentials",
        "[prod]\naws_access_key_id = AKIDPRODFLAG\naws_secret_access_key = fake-prod-secret\n",
    );
    let fake = parameter_store();
    let mut command = qlarius_env(&fake.url);
    command
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .args(["--profile", "prod", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "AKIDPRODFLAG");
    assert!(stderr.contains("AWS_ACCESS_KEY_ID in the environment is ignored"), "{stderr}");

    // AWS_PROFILE, unlike the flag, leaves the environment's keys first, as in the SDK.
    let fake = parameter_store();
    let mut command = qlarius_env(&fake.url);
    command
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env("AWS_PROFILE", "prod")
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(signing_key(&fake), "AKIDTESTONLY");
}

#[test]
fn missing_profile_flag_tries_nothing_else() {
    let fake = parameter_store();
    let mut command = qlarius_env(&fake.url);
    command.args(["--profile", "nosuch", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("--profile nosuch: profile nosuch (not configured)"), "{stderr}");
    assert!(fake.requests().is_empty());
}
