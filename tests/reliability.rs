//! Retries, timeouts, proxies and clock skew, against the scriptable fake endpoint and a
//! forward proxy on loopback.

mod common;

use common::fake::{FakeAws, Reply, page};
use common::http::{Proxy, TEST_CA, TlsServer};
use common::*;
use std::process::Output;
use std::time::Duration;

const PATH: &str = "/app";

fn one_page() -> Reply {
    Reply::ok(page(&[("/app/db-password", "fake-db-password")], None))
}

fn run(mut command: assert_cmd::Command) -> (Option<i32>, String) {
    let Output { status, stderr, .. } = command.output().unwrap();
    (status.code(), String::from_utf8_lossy(&stderr).into_owned())
}

fn retry_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("retrying")).collect()
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("qlarius-env: error:")).collect()
}

#[test]
fn throttled_twice_then_starts() {
    let fake = FakeAws::start(vec![Reply::throttled(), Reply::throttled(), one_page()]);
    let mut command = qlarius_env(&fake.url);
    command.args(["--path", PATH, "--", "printenv", "DB_PASSWORD"]);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "fake-db-password\n");
    assert_eq!(fake.count("GetParametersByPath"), 3);
    let retries = retry_lines(&stderr);
    assert_eq!(retries.len(), 2, "{stderr}");
    for line in retries {
        assert!(line.starts_with("qlarius-env: warning: GetParametersByPath failed with ThrottlingException"), "{line}");
    }
    assert!(stderr.contains("(attempt 2 of "), "{stderr}");
    assert!(stderr.contains("(attempt 3 of "), "{stderr}");
}

#[test]
fn throttled_until_attempts_run_out() {
    let fake = FakeAws::start(vec![Reply::throttled()]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let mut command = qlarius_env(&fake.url);
    command
        .env("AWS_MAX_ATTEMPTS", "3")
        .args(["--path", PATH, "--", "touch"])
        .arg(&marker);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(75), "{stderr}");
    assert_eq!(fake.count("GetParametersByPath"), 3);
    assert!(!marker.exists(), "the command ran");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("GetParametersByPath /app failed: ThrottlingException"), "{stderr}");
    assert_eq!(retry_lines(&stderr).len(), 2, "{stderr}");
}

#[test]
fn one_attempt_disables_retries() {
    let fake = FakeAws::start(vec![Reply::throttled()]);
    let mut command = qlarius_env(&fake.url);
    command.env("AWS_MAX_ATTEMPTS", "1").args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(75), "{stderr}");
    assert_eq!(fake.count("GetParametersByPath"), 1);
    assert!(retry_lines(&stderr).is_empty(), "{stderr}");
}

#[test]
fn server_errors_are_retried() {
    for (status, code) in [(500, "InternalServerError"), (503, "ServiceUnavailable")] {
        let fake = FakeAws::start(vec![Reply::error(status, code, "try again"), one_page()]);
        let mut command = qlarius_env(&fake.url);
        command.args(["--path", PATH, "--", "true"]);
        let (exit, stderr) = run(command);

        assert_eq!(exit, Some(0), "{status}: {stderr}");
        assert_eq!(fake.count("GetParametersByPath"), 2, "{status}");
        let retries = retry_lines(&stderr);
        assert_eq!(retries.len(), 1, "{stderr}");
        assert!(retries[0].contains(&format!("{code} (HTTP {status})")), "{stderr}");
    }
}

#[test]
fn server_errors_until_attempts_run_out() {
    let fake = FakeAws::start(vec![Reply::error(503, "ServiceUnavailable", "down")]);
    let mut command = qlarius_env(&fake.url);
    command.env("AWS_MAX_ATTEMPTS", "2").args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(69), "{stderr}");
    assert_eq!(fake.count("GetParametersByPath"), 2);
    assert!(stderr.contains("ServiceUnavailable"), "{stderr}");
}

#[test]
fn client_errors_are_sent_once() {
    let cases = [
        (400, "AccessDeniedException", "User is not authorized to perform: ssm:GetParametersByPath"),
        (400, "ParameterNotFound", "not found"),
        (400, "ValidationException", "invalid path"),
    ];
    for (status, code, message) in cases {
        let fake = FakeAws::start(vec![Reply::error(status, code, message), one_page()]);
        let mut command = qlarius_env(&fake.url);
        command.args(["--path", PATH, "--", "true"]);
        let (exit, stderr) = run(command);

        assert_ne!(exit, Some(0), "{code}: {stderr}");
        assert_eq!(fake.count("GetParametersByPath"), 1, "{code} was retried");
        assert!(retry_lines(&stderr).is_empty(), "{stderr}");
        assert!(stderr.contains(code), "{stderr}");
    }
}

#[test]
fn retry_mode_and_attempts_from_environment() {
    let fake = FakeAws::start(vec![Reply::throttled(), one_page()]);
    let mut command = qlarius_env(&fake.url);
    command
        .env("AWS_RETRY_MODE", "adaptive")
        .env("AWS_MAX_ATTEMPTS", "4")
        .args(["-v", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("retry mode Adaptive, 4 attempts"), "{stderr}");
    assert!(stderr.contains("(attempt 2 of 4)"), "{stderr}");
    assert_eq!(fake.count("GetParametersByPath"), 2);
}

#[test]
fn invalid_retry_settings_are_usage_errors() {
    for (name, value) in [("AWS_MAX_ATTEMPTS", "0"), ("AWS_MAX_ATTEMPTS", "lots"), ("AWS_RETRY_MODE", "eager")] {
        let mut command = qlarius_env("http://127.0.0.1:9");
        command.env(name, value).args(["--path", PATH, "--", "true"]);
        let (code, stderr) = run(command);
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[test]
fn silent_server_times_out_within_budget() {
    let fake = FakeAws::start(vec![Reply::Stall]);
    let mut command = qlarius_env(&fake.url);
    command.args(["--timeout", "2s", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(75), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    // The launch's deadline and the SDK's operation timeout end on the same tick, so
    // either may report it; only the launch's adds the cause of the last failed attempt.
    assert!(errors[0].contains("timed out after 2s waiting for GetParametersByPath /app"), "{stderr}");
    assert!(fake.count("GetParametersByPath") >= 1);
}

#[test]
fn stalled_attempt_is_retried() {
    let fake = FakeAws::start(vec![Reply::Stall, one_page()]);
    let mut command = qlarius_env(&fake.url);
    // A 6 s budget gives each attempt 2 s.
    command.args(["--timeout", "6s", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(fake.count("GetParametersByPath"), 2);
    let retries = retry_lines(&stderr);
    assert_eq!(retries.len(), 1, "{stderr}");
    assert!(retries[0].contains("failed with a timeout"), "{stderr}");
}

#[test]
fn closed_port_is_unavailable() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut command = qlarius_env(&url);
    command.env("AWS_MAX_ATTEMPTS", "2").args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(69), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&format!("cannot reach Parameter Store at {url}")), "{stderr}");
    let retries = retry_lines(&stderr);
    assert_eq!(retries.len(), 1, "{stderr}");
    assert!(retries[0].contains("a connection error"), "{stderr}");
}

#[test]
fn malformed_body_is_protocol_error() {
    let fake = FakeAws::start(vec![Reply::Raw {
        status: 200,
        body: "<html>captive portal</html>".into(),
    }]);
    let mut command = qlarius_env(&fake.url);
    command.args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(76), "{stderr}");
    assert!(stderr.contains("invalid response from Parameter Store for GetParametersByPath /app"), "{stderr}");
    assert_eq!(fake.count("GetParametersByPath"), 1);
}

#[test]
fn truncated_body_is_retried() {
    let fake = FakeAws::start(vec![Reply::Truncated, one_page()]);
    let mut command = qlarius_env(&fake.url);
    command.args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(fake.count("GetParametersByPath"), 2);
    assert_eq!(retry_lines(&stderr).len(), 1, "{stderr}");
}

#[test]
fn truncated_body_on_every_attempt_fails() {
    let fake = FakeAws::start(vec![Reply::Truncated]);
    let mut command = qlarius_env(&fake.url);
    command.env("AWS_MAX_ATTEMPTS", "2").args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_ne!(code, Some(0), "{stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert_eq!(fake.count("GetParametersByPath"), 2);
}

#[test]
fn slow_first_page_then_second_page() {
    let first = page(&[("/app/a", "fake-a")], Some("token-1"));
    let second = page(&[("/app/b", "fake-b")], None);
    let fake = FakeAws::start(vec![
        Reply::Delayed(Duration::from_millis(1500), Box::new(Reply::ok(first))),
        Reply::ok(second),
    ]);
    let mut command = qlarius_env(&fake.url);
    command.args(["--path", PATH, "--", "sh", "-c", "printf '%s %s' \"$A\" \"$B\""]);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "fake-a fake-b");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].body["NextToken"], "token-1");
    assert!(retry_lines(&stderr).is_empty(), "{stderr}");
}

#[test]
fn clock_skew_says_check_clock() {
    let message = "Signature expired: 20260101T000000Z is now earlier than 20260101T001000Z (20260101T000500Z - 5 min.)";
    let fake = FakeAws::start(vec![Reply::error(400, "InvalidSignatureException", message)]);
    let mut command = qlarius_env(&fake.url);
    command.args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("InvalidSignatureException"), "{stderr}");
    assert!(stderr.contains("hint: AWS rejected the request's timestamp: check the system clock"), "{stderr}");
}

#[test]
fn splay_delays_first_request() {
    let fake = FakeAws::start(vec![one_page()]);
    let mut command = qlarius_env(&fake.url);
    command
        .env("QLARIUS_ENV_SPLAY", "50ms")
        .args(["-v", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("(--splay 50ms) before the first request"), "{stderr}");

    let mut command = qlarius_env(&fake.url);
    command.args(["--splay", "0s", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);
    assert_eq!(code, Some(64), "{stderr}");
}

#[test]
fn http_proxy_forwards_absolute_uri() {
    for variable in ["HTTP_PROXY", "http_proxy"] {
        let fake = FakeAws::start(vec![one_page()]);
        let proxy = Proxy::start(None);
        let mut command = qlarius_env(&fake.url);
        command.env(variable, &proxy.url).args(["--path", PATH, "--", "true"]);
        let (code, stderr) = run(command);

        assert_eq!(code, Some(0), "{variable}: {stderr}");
        let requests = proxy.requests();
        assert_eq!(requests.len(), 1, "{variable}");
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].target, format!("{}/", fake.url), "{variable}");
        assert_eq!(fake.count("GetParametersByPath"), 1);
    }
}

#[test]
fn proxy_password_stays_out_of_output() {
    let fake = FakeAws::start(vec![one_page()]);
    let proxy = Proxy::start(Some(("proxyuser", "pr0xy-pa55")));
    let mut command = qlarius_env(&fake.url);
    command.env("HTTP_PROXY", &proxy.url).args(["-vv", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(proxy.requests().len(), 1);
    assert!(proxy.requests()[0].header("proxy-authorization").is_some());
    assert!(stderr.contains("proxyuser:***@"), "{stderr}");
    assert!(!stderr.contains("pr0xy-pa55"), "{stderr}");

    // A proxy that rejects the password.
    let strict = Proxy::start(Some(("proxyuser", "other-pa55")));
    let wrong = strict.url.replace("other-pa55", "pr0xy-pa55");
    let mut command = qlarius_env(&fake.url);
    command
        .env("HTTP_PROXY", &wrong)
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["-vv", "--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("pr0xy-pa55"), "{stderr}");
}

#[test]
fn no_proxy_bypasses_proxy() {
    let fake = FakeAws::start(vec![one_page()]);
    let proxy = Proxy::start(None);
    let mut command = qlarius_env(&fake.url);
    command
        .env("HTTP_PROXY", &proxy.url)
        .env("no_proxy", "127.0.0.1")
        .args(["--path", PATH, "--", "true"]);
    let (code, stderr) = run(command);

    assert_eq!(code, Some(0), "{stderr}");
    assert!(proxy.requests().is_empty());
    assert_eq!(fake.count("GetParametersByPath"), 1);
}

#[test]
fn https_endpoint_goes_through_connect() {
    // The proxy tunnels to a plain-HTTP listener, so the TLS handshake fails after the
    // tunnel is up. This test checks the CONNECT request and its credentials only.
    let target = FakeAws::start(vec![one_page()]);
    let port = target.url.rsplit(':').next().unwrap();
    let proxy = Proxy::start(Some(("proxyuser", "pr0xy-pa55")));
    for variable in ["HTTPS_PROXY", "https_proxy"] {
        let mut command = qlarius_env(&format!("https://127.0.0.1:{port}"));
        command
            .env(variable, &proxy.url)
            .env("AWS_MAX_ATTEMPTS", "1")
            .args(["-vv", "--path", PATH, "--", "true"]);
        let (code, stderr) = run(command);

        assert_ne!(code, Some(0), "{stderr}");
        assert!(!stderr.contains("pr0xy-pa55"), "{stderr}");
    }
    let requests = proxy.requests();
    assert_eq!(requests.len(), 2);
    for request in requests {
        assert_eq!(request.method, "CONNECT");
        assert_eq!(request.target, format!("127.0.0.1:{port}"));
        assert!(request.header("proxy-authorization").is_some());
    }
}

#[test]
fn https_proxy_tunnels_to_parameter_store() {
    let server = TlsServer::start(page(&[("/app/db-password", "fake-db-password")], None));
    let proxy = Proxy::start(Some(("proxyuser", "pr0xy-pa55")));
    let mut command = qlarius_env(&server.url);
    command
        .env("HTTPS_PROXY", &proxy.url)
        .env("NO_PROXY", "169.254.169.254,localhost")
        .env("SSL_CERT_FILE", TEST_CA)
        .args(["-vv", "--path", PATH, "--", "printenv", "DB_PASSWORD"]);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "fake-db-password\n");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "CONNECT");
    assert_eq!(requests[0].target, server.url.trim_start_matches("https://"));
    assert_eq!(server.requests().len(), 1);
    assert!(!stderr.contains("pr0xy-pa55"), "{stderr}");
}
