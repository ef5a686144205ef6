//! End-to-end launches against moto's Parameter Store on loopback.

mod common;

use common::*;
use predicates::prelude::*;
use std::os::unix::process::ExitStatusExt;

#[test]
fn qlarius_defaults_arrive_exactly() {
    let moto = moto();
    let parameters = qlarius_parameters("/qlarius");
    let puts: Vec<Put> = parameters.iter().map(|(n, v)| secure(n.clone(), v)).collect();
    put_parameters(&puts);

    let output = qlarius_env(&moto.url)
        .args(["--", "sh", "-c", "printf '%s|%s|%s|%s' \"$TWILIO_ACCOUNT_SID\" \"$TWILIO_AUTH_TOKEN\" \"$TWILIO_VERIFY_SERVICE_SID\" \"$CLOAK_KEY\""])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let expected: Vec<&str> = parameters.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected.join("|"));
    assert!(
        stderr.contains("loaded 4 variables from /qlarius"),
        "{stderr}"
    );
    assert!(stderr.contains("(1 request): CLOAK_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_VERIFY_SERVICE_SID"), "{stderr}");
    for value in expected {
        assert!(!stderr.contains(value), "stderr shows a value: {stderr}");
    }
}

fn count_under(path: &str, n: usize) -> String {
    let names: Vec<String> = (1..=n).map(|i| format!("{path}/p{i:02}")).collect();
    let values: Vec<String> = (1..=n).map(|i| format!("v{i:02}")).collect();
    let puts: Vec<Put> = names
        .iter()
        .zip(&values)
        .map(|(name, value)| plain(name.clone(), value))
        .collect();
    put_parameters(&puts);
    let output = qlarius_env(&moto().url)
        .args(["--path", path, "--", "sh", "-c", "env | grep -c '^P[0-9][0-9]='"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn pagination_loads_every_page() {
    for n in [1, 9, 10, 11, 26] {
        let path = unique_path("pages");
        assert_eq!(count_under(&path, n), n.to_string(), "{n} parameters");
    }
}

#[test]
fn pagination_with_big_secure_value() {
    let path = unique_path("big");
    let big = "x".repeat(8192);
    let mut puts: Vec<Put> = Vec::new();
    let names: Vec<String> = (1..=25).map(|i| format!("{path}/p{i:02}")).collect();
    let values: Vec<String> = (1..=25).map(|i| format!("v{i:02}")).collect();
    for (name, value) in names.iter().zip(&values) {
        puts.push(plain(name.clone(), value));
    }
    puts.push(secure(format!("{path}/p26"), "v26"));
    let mut big_put = secure(format!("{path}/big"), &big);
    big_put.advanced = true;
    puts.push(big_put);
    put_parameters(&puts);

    qlarius_env(&moto().url)
        .args(["--path", &path, "--", "sh", "-c", "env | grep -c '^P[0-9][0-9]='; printf %s \"$BIG\" | wc -c"])
        .assert()
        .success()
        .stdout("26\n8192\n");
}

#[test]
fn values_pass_byte_exact() {
    let path = unique_path("bytes");
    let pem = "-----BEGIN PRIVATE KEY-----\nAAAA\nBBBB\n-----END PRIVATE KEY-----\n";
    let cases = [
        ("tls/private-key", "TLS_PRIVATE_KEY", pem),
        ("smtp/password", "SMTP_PASSWORD", "  s3cret\t "),
        ("feature/override", "FEATURE_OVERRIDE", "-"),
        ("odd", "ODD", "a=b \"q\" 'x' $HOME `id` \\ é ☃"),
        ("banner", "BANNER", "x'; touch /tmp/pwned; echo '"),
        ("html", "HTML", "'Lorem<br><br>'"),
    ];
    let puts: Vec<Put> = cases
        .iter()
        .map(|(name, _, value)| secure(format!("{path}/{name}"), value))
        .collect();
    put_parameters(&puts);

    for (_, variable, value) in cases {
        let mut command = qlarius_env(&moto().url);
        command.args(["--path", &path]);
        assert_eq!(
            value_seen_by_child(command, variable),
            value.as_bytes(),
            "{variable}"
        );
    }
}

#[test]
fn names_convert_dashes_and_dots() {
    let path = unique_path("names");
    put_parameters(&[
        secure(format!("{path}/twilio/auth-token"), "tok"),
        plain(format!("{path}/db.host"), "db.example.internal"),
    ]);
    let output = qlarius_env(&moto().url)
        .args(["--path", &path, "--", "env"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.lines().any(|l| l == "TWILIO_AUTH_TOKEN=tok"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "DB_HOST=db.example.internal"), "{stdout}");
}

#[test]
fn leading_digit_is_rejected() {
    let path = unique_path("digit");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    put_parameters(&[plain(format!("{path}/2fa/issuer"), "acme")]);
    qlarius_env(&moto().url)
        .args(["--path", &path, "--", "touch"])
        .arg(&marker)
        .assert()
        .code(65)
        .stderr(predicate::str::contains(format!(
            "parameter {path}/2fa/issuer maps to \"2FA_ISSUER\", which is not a valid variable name"
        )));
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn case_collision_names_both() {
    let path = unique_path("case");
    put_parameters(&[
        plain(format!("{path}/Api_Key"), "k1"),
        plain(format!("{path}/API_KEY"), "k2"),
        plain(format!("{path}/TF_VAR_instance_type"), "t3.micro"),
    ]);
    qlarius_env(&moto().url)
        .args(["--path", &path, "--", "true"])
        .assert()
        .code(65)
        .stderr(predicate::str::contains(format!(
            "parameters {path}/API_KEY and {path}/Api_Key both map to API_KEY"
        )))
        .stderr(predicate::str::contains("k1").not())
        .stderr(predicate::str::contains("k2").not());
}

#[test]
fn missing_required_lists_all_and_runs_nothing() {
    let path = unique_path("required");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    put_parameters(&[secure(format!("{path}/present"), "here")]);
    qlarius_env(&moto().url)
        .args(["--path", &path, "--require", "PRESENT,ABSENT_ONE", "--require", "ABSENT_TWO", "--", "touch"])
        .arg(&marker)
        .assert()
        .code(66)
        .stderr(predicate::str::contains(
            "missing required variables: ABSENT_ONE, ABSENT_TWO",
        ));
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn default_required_names_expected_parameters() {
    // An empty endpoint path would fail earlier, so point the default list at a path
    // that holds one unrelated parameter.
    let path = unique_path("defaults");
    put_parameters(&[secure(format!("{path}/other"), "x")]);
    qlarius_env(&moto().url)
        .env("QLARIUS_ENV_REQUIRE", "CLOAK_KEY")
        .args(["--path", &path, "--", "true"])
        .assert()
        .code(66)
        .stderr(predicate::str::contains("missing required variable: CLOAK_KEY"));
}

#[test]
fn empty_path_fails_unless_allowed() {
    let path = unique_path("empty");
    qlarius_env(&moto().url)
        .args(["--path", &path, "--", "true"])
        .assert()
        .code(66)
        .stderr(predicate::str::contains(format!("0 parameters under {path}")))
        .stderr(predicate::str::contains("case-sensitive"));
    qlarius_env(&moto().url)
        .args(["--path", &path, "--allow-empty", "--", "true"])
        .assert()
        .success();
}

#[test]
fn path_mistakes_get_specific_errors() {
    let path = unique_path("MyApp");
    put_parameters(&[secure(format!("{path}/db/password"), "pw")]);

    // No leading slash.
    qlarius_env(&moto().url)
        .args(["--path", path.trim_start_matches('/'), "--", "true"])
        .assert()
        .code(64)
        .stderr(predicate::str::contains(format!("did you mean {path}?")));

    // A parameter's full name.
    qlarius_env(&moto().url)
        .args(["--path", &format!("{path}/db/password"), "--", "true"])
        .assert()
        .code(66)
        .stderr(predicate::str::contains("is a parameter, not a path"))
        .stderr(predicate::str::contains(format!("--path {path}/db")));

    // Wrong case.
    qlarius_env(&moto().url)
        .args(["--path", &path.to_lowercase(), "--", "true"])
        .assert()
        .code(66)
        .stderr(predicate::str::contains("case-sensitive"));

    // Trailing slash.
    let mut command = qlarius_env(&moto().url);
    command.args(["--path", &format!("{path}/")]);
    assert_eq!(value_seen_by_child(command, "DB_PASSWORD"), b"pw");
}

#[test]
fn existing_variable_is_replaced_and_named() {
    let path = unique_path("replace");
    put_parameters(&[secure(format!("{path}/twilio/auth-token"), "fresh-value")]);
    let mut command = qlarius_env(&moto().url);
    command
        .env("TWILIO_AUTH_TOKEN", "stale-value")
        .args(["--path", &path, "--", "printenv", "TWILIO_AUTH_TOKEN"])
        .assert()
        .success()
        .stdout("fresh-value\n")
        .stderr(predicate::str::contains("replacing TWILIO_AUTH_TOKEN"))
        .stderr(predicate::str::contains("stale-value").not())
        .stderr(predicate::str::contains("fresh-value").not());
}

#[test]
fn endpoint_flag_and_service_variable_win() {
    let path = unique_path("endpoint");
    put_parameters(&[secure(format!("{path}/k"), "v")]);
    let closed = format!("http://127.0.0.1:{}", free_port());

    // --endpoint-url over AWS_ENDPOINT_URL.
    let mut command = qlarius_env(&closed);
    command.args(["--endpoint-url", &moto().url, "--path", &path]);
    assert_eq!(value_seen_by_child(command, "K"), b"v");

    // AWS_ENDPOINT_URL_SSM over AWS_ENDPOINT_URL.
    let mut command = qlarius_env(&closed);
    command.env("AWS_ENDPOINT_URL_SSM", &moto().url).args(["--path", &path]);
    assert_eq!(value_seen_by_child(command, "K"), b"v");
}

#[test]
fn exit_status_passes_through() {
    let path = unique_path("status");
    put_parameters(&[plain(format!("{path}/k"), "v")]);
    for code in [0, 1, 3, 255] {
        qlarius_env(&moto().url)
            .args(["--path", &path, "--", "sh", "-c", &format!("exit {code}")])
            .assert()
            .code(code);
    }
    let output = qlarius_env(&moto().url)
        .args(["--path", &path, "--", "sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    assert_eq!(output.status.signal(), Some(15));
}

#[test]
fn command_not_found_and_not_executable() {
    let path = unique_path("exec");
    put_parameters(&[plain(format!("{path}/k"), "v")]);
    qlarius_env(&moto().url)
        .args(["--path", &path, "--", "no-such-command-qlarius"])
        .assert()
        .code(127)
        .stderr(predicate::str::contains("no-such-command-qlarius: command not found"));

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    qlarius_env(&moto().url)
        .args(["--path", &path, "--"])
        .arg(&script)
        .assert()
        .code(126)
        .stderr(predicate::str::contains("permission denied"));

    // Found on PATH but not executable: 126, as a shell reports it.
    qlarius_env(&moto().url)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .args(["--path", &path, "--", "not-executable"])
        .assert()
        .code(126);
}

#[test]
fn script_without_shebang_runs_with_sh() {
    let path = unique_path("noshebang");
    put_parameters(&[plain(format!("{path}/greeting"), "hello")]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("plain-script");
    std::fs::write(&script, "printf %s \"$GREETING\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    qlarius_env(&moto().url)
        .args(["--path", &path, "--"])
        .arg(&script)
        .assert()
        .success()
        .stdout("hello");
}

#[test]
fn usage_errors_exit_64() {
    qlarius_env("http://127.0.0.1:9")
        .assert()
        .code(64)
        .stderr(predicate::str::contains("no command given"));
    qlarius_env("http://127.0.0.1:9")
        .args(["--no-such-flag", "--", "true"])
        .assert()
        .code(64);
    qlarius_env("http://127.0.0.1:9")
        .args(["--timeout", "soon", "--", "true"])
        .assert()
        .code(64);
}

#[test]
fn help_and_version_need_no_network() {
    qlarius_env("http://127.0.0.1:9")
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("QLARIUS_ENV_PATH"))
        .stdout(predicate::str::contains("Exit codes"));
    qlarius_env("http://127.0.0.1:9")
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("qlarius-env "));
}

#[test]
fn path_from_environment_variable() {
    let first = unique_path("envpath");
    let second = unique_path("envpath");
    put_parameters(&[plain(format!("{first}/a"), "1"), plain(format!("{second}/b"), "2")]);
    qlarius_env(&moto().url)
        .env("QLARIUS_ENV_PATH", format!("{first},{second}"))
        .args(["--", "sh", "-c", "printf %s%s \"$A\" \"$B\""])
        .assert()
        .success()
        .stdout("12");
}

#[test]
fn later_path_wins_and_is_logged() {
    let common = unique_path("common");
    let prod = unique_path("prod");
    put_parameters(&[
        plain(format!("{common}/db/host"), "common-host"),
        plain(format!("{prod}/db/host"), "prod-host"),
    ]);
    qlarius_env(&moto().url)
        .args(["--path", &common, "--path", &prod, "--", "printenv", "DB_HOST"])
        .assert()
        .success()
        .stdout("prod-host\n")
        .stderr(predicate::str::contains(format!(
            "DB_HOST from {prod}/db/host replaces the one from {common}/db/host"
        )));
}

#[test]
fn quiet_short_lived_command_leaves_stderr_empty() {
    let path = unique_path("quiet");
    put_parameters(&[secure(format!("{path}/k"), "v")]);
    for mode in [None, Some("--init")] {
        let mut command = qlarius_env(&moto().url);
        command.args(mode).args(["-q", "--path", &path, "--", "env"]);
        command.assert().success().stderr("");
    }
    // Without -q, exactly the start-up line.
    let output = qlarius_env(&moto().url)
        .args(["--path", &path, "--", "env"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("qlarius-env: info: loaded 1 variable from"), "{stderr}");
}
