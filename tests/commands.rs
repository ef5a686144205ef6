//! End-to-end tests of the operator commands (check, put, keygen, policy, completions,
//! man) against moto on loopback and the scriptable fake endpoint.

mod common;

use base64::Engine;
use common::fake::{self, FakeAws, Reply};
use common::*;
use predicates::prelude::*;

/// Runs the command and returns (exit code, stdout, stderr).
fn run(mut command: assert_cmd::Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reads a parameter back from moto with the SDK, decrypted.
fn stored_value(name: &str) -> (String, i64) {
    block_on(async {
        let output = ssm_client(&moto().url)
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetParameter {name} failed: {e:?}"));
        let parameter = output.parameter.unwrap();
        (parameter.value.unwrap(), parameter.version)
    })
}

fn assert_absent(haystack: &str, value: &str, stream: &str) {
    assert!(!haystack.contains(value), "{stream} shows a value: {haystack}");
}

// ---- check ----

#[test]
fn check_all_good_exits_zero() {
    let path = unique_path("check-good");
    put_parameters(&[
        secure(format!("{path}/db/password"), "fake-db-password-1"),
        secure(format!("{path}/api-key"), "fake-api-key-2"),
    ]);
    let mut command = qlarius_env(&moto().url);
    command.args(["check", "--path", &path, "--require", "DB_PASSWORD,API_KEY"]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("region        us-east-1 (from AWS_REGION)"), "{stdout}");
    assert!(stdout.contains("EnvironmentVariable, access key ****ONLY"), "{stdout}");
    assert!(stdout.contains("arn:aws:sts::123456789012:user/moto"), "{stdout}");
    assert!(stdout.contains(&format!("{path}/db/password -> DB_PASSWORD")), "{stdout}");
    assert!(stdout.contains("key alias/aws/ssm"), "{stdout}");
    assert!(stdout.contains("18 bytes"), "{stdout}");
    assert!(stdout.contains("2 SecureString parameters decrypted"), "{stdout}");
    assert!(stdout.contains("result: a launch would start the command"), "{stdout}");
    for value in ["fake-db-password-1", "fake-api-key-2"] {
        assert_absent(&stdout, value, "stdout");
        assert_absent(&stderr, value, "stderr");
    }
}

#[test]
fn check_missing_parameter_exits_66() {
    let path = unique_path("check-missing");
    put_parameters(&[secure(format!("{path}/present"), "fake-present-value")]);
    let mut command = qlarius_env(&moto().url);
    command.args(["check", "--path", &path, "--require", "PRESENT,ABSENT"]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 66, "{stdout}{stderr}");
    assert!(stdout.contains("ok      required      PRESENT from"), "{stdout}");
    assert!(stdout.contains("FAIL    required      ABSENT missing"), "{stdout}");
    assert!(stderr.contains("qlarius-env: error: missing required variable: ABSENT"), "{stderr}");
}

#[test]
fn check_default_names_expected_parameters() {
    // Nothing in this test binary writes under the default path /qlarius.
    let mut command = qlarius_env(&moto().url);
    command.args(["check", "--json"]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 66, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["paths"], serde_json::json!(["/qlarius"]));
    assert_eq!(report["error"]["message"], "0 parameters under /qlarius");
    let required = report["required"].as_array().unwrap();
    assert_eq!(required.len(), 4);
    let cloak = required.iter().find(|r| r["variable"] == "CLOAK_KEY").unwrap();
    assert_eq!(cloak["found"], false);
    assert_eq!(cloak["expected_parameter"], "/qlarius/cloak-key");
}

#[test]
fn check_reports_denied_decryption_and_metadata() {
    let fake = FakeAws::start(vec![
        Reply::error(400, "AccessDenied", "fake STS refuses"),
        Reply::error(
            400,
            "AccessDeniedException",
            "User: arn:aws:iam::111122223333:user/app is not authorized to perform: ssm:DescribeParameters",
        ),
        Reply::error(
            400,
            "AccessDeniedException",
            "User: arn:aws:iam::111122223333:user/app is not authorized to perform: kms:Decrypt",
        ),
    ]);
    let mut command = qlarius_env(&fake.url);
    command.args(["check", "--json", "--path", "/fake"]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 77, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["decryption"]["status"], "failed");
    assert!(report["identity_error"].as_str().unwrap().contains("GetCallerIdentity failed"), "{stdout}");
    let metadata_error = report["metadata_error"].as_str().unwrap();
    assert!(metadata_error.contains("DescribeParameters /fake failed"), "{metadata_error}");
    assert!(metadata_error.contains("policy --check"), "{metadata_error}");
    assert!(stderr.contains("kms:Decrypt"), "{stderr}");
}

#[test]
fn check_names_parameter_it_cannot_decrypt() {
    let kms_denied = || {
        Reply::error(
            400,
            "AccessDeniedException",
            "User: arn:aws:iam::111122223333:user/app is not authorized to perform: kms:Decrypt",
        )
    };
    let readable = serde_json::json!({
        "Parameters": [{ "Name": "/fake/a", "Value": "fake-a-value", "Type": "SecureString", "Version": 1 }],
        "InvalidParameters": []
    });
    let fake = FakeAws::start(vec![
        // GetCallerIdentity, DescribeParameters, then the launch's decrypting read.
        Reply::error(400, "AccessDenied", "fake STS refuses"),
        Reply::error(400, "AccessDeniedException", "not authorized to perform: ssm:DescribeParameters"),
        kms_denied(),
        // The listing without decryption, then one GetParameters per SecureString.
        Reply::ok(fake::page(&[("/fake/a", "ciphertext-a"), ("/fake/b", "ciphertext-b")], None)),
        Reply::ok(readable.to_string()),
        kms_denied(),
    ]);
    let mut command = qlarius_env(&fake.url);
    command.args(["check", "--json", "--path", "/fake"]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 77, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let parameters = report["parameters"].as_array().unwrap();
    assert_eq!(parameters.len(), 2, "{stdout}");
    assert_eq!(parameters[0]["name"], "/fake/a");
    assert_eq!(parameters[0]["decrypted"], true);
    assert_eq!(parameters[0]["value_length"], 12);
    assert_eq!(parameters[1]["name"], "/fake/b");
    assert_eq!(parameters[1]["decrypted"], false);
    assert_eq!(parameters[1]["warnings"][0], "decryption failed: AccessDeniedException");
    assert_eq!(fake.count("GetParameters"), 2);
    for value in ["fake-a-value", "ciphertext-a", "ciphertext-b"] {
        assert_absent(&stdout, value, "stdout");
        assert_absent(&stderr, value, "stderr");
    }
}

#[test]
fn check_warns_on_string_type() {
    let path = unique_path("check-string");
    put_parameters(&[
        plain(format!("{path}/plain"), "fake-plain-value"),
        secure(format!("{path}/secret"), "fake-secret-value"),
    ]);
    let mut command = qlarius_env(&moto().url);
    command.args(["check", "--path", &path]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("warn    {path}/plain -> PLAIN  [String")), "{stdout}");
    assert!(stdout.contains("type is String, not SecureString"), "{stdout}");
    assert!(stdout.contains(&format!("ok      {path}/secret -> SECRET  [SecureString")), "{stdout}");
}

#[test]
fn check_reports_every_collision_and_invalid_name() {
    let path = unique_path("check-collide");
    put_parameters(&[
        secure(format!("{path}/Api_Key"), "fake-k1"),
        secure(format!("{path}/API_KEY"), "fake-k2"),
        secure(format!("{path}/a-b"), "fake-k3"),
        secure(format!("{path}/a/b"), "fake-k4"),
        secure(format!("{path}/2fa/issuer"), "fake-k5"),
    ]);
    let mut command = qlarius_env(&moto().url);
    command.args(["check", "--json", "--path", &path]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 65, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let collisions = report["collisions"].as_array().unwrap();
    assert_eq!(collisions.len(), 2, "{stdout}");
    let variables: Vec<&str> = collisions.iter().map(|c| c["variable"].as_str().unwrap()).collect();
    assert!(variables.contains(&"API_KEY"), "{variables:?}");
    assert!(variables.contains(&"A_B"), "{variables:?}");
    assert_eq!(report["invalid_names"][0]["parameter"], format!("{path}/2fa/issuer"));
    assert_eq!(report["invalid_names"][0]["variable"], "2FA_ISSUER");
    assert!(stderr.contains("both map to"), "{stderr}");
}

#[test]
fn check_without_credentials_exits_78() {
    let mut command = qlarius_env(&moto().url);
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["check", "--path", "/t/anything"]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 78, "{stdout}{stderr}");
    assert!(stdout.contains("ok      region"), "{stdout}");
    assert!(stdout.contains("FAIL    credentials   none found"), "{stdout}");
    assert!(stderr.contains("no AWS credentials found"), "{stderr}");
}

#[test]
fn check_without_region_exits_78() {
    let mut command = qlarius_env(&moto().url);
    command.env_remove("AWS_REGION").args(["check", "--json", "--path", "/t/anything"]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 78, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["exit_code"], 78);
    assert_eq!(report["region"], serde_json::Value::Null);
    assert_eq!(report["error"]["message"], "no AWS region is configured");
}

#[test]
fn check_json_contains_no_value() {
    let path = unique_path("check-canary");
    let canary_secure = "CANARY-secure-7f3a9c";
    let canary_plain = "CANARY-plain-41d2be";
    put_parameters(&[
        secure(format!("{path}/token"), canary_secure),
        plain(format!("{path}/setting"), canary_plain),
    ]);
    let mut command = qlarius_env(&moto().url);
    command
        .env("QLARIUS_ENV_LOG", "trace")
        .args(["-vv", "check", "--json", "--path", &path, "--require", "TOKEN"]);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is one JSON document");
    assert_eq!(report["ok"], true);
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["identity"]["account"], "123456789012");
    assert_eq!(report["decryption"]["status"], "ok");
    let token = report["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["variable"] == "TOKEN")
        .unwrap();
    assert_eq!(token["type"], "SecureString");
    assert_eq!(token["value_length"], canary_secure.len());
    assert_eq!(token["version"], 1);
    assert!(token["last_modified"].is_string(), "{token}");
    for canary in [canary_secure, canary_plain, "CANARY"] {
        assert_absent(&stdout, canary, "stdout");
        assert_absent(&stderr, canary, "stderr");
    }
}

#[test]
fn check_names_variables_it_would_replace() {
    let path = unique_path("check-override");
    put_parameters(&[secure(format!("{path}/cloak-key"), "fake-cloak-value")]);
    let mut command = qlarius_env(&moto().url);
    command.env("CLOAK_KEY", "stale-local-value").args(["check", "--json", "--path", &path]);
    let (code, stdout, _) = run(command);

    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["environment_overrides"], serde_json::json!(["CLOAK_KEY"]));
    assert_absent(&stdout, "stale-local-value", "stdout");
}

#[test]
fn check_after_double_dash_is_launched() {
    let path = unique_path("check-command");
    put_parameters(&[secure(format!("{path}/x"), "fake-x")]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("check");
    std::fs::write(&script, "#!/bin/sh\nprintf 'launched:%s' \"$X\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    qlarius_env(&moto().url)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .args(["--path", &path, "--", "check"])
        .assert()
        .success()
        .stdout("launched:fake-x");
}

#[test]
fn options_before_subcommand_are_rejected() {
    qlarius_env("http://127.0.0.1:9")
        .args(["--path", "/x", "check"])
        .assert()
        .code(64)
        .stderr(predicate::str::contains("put options after the subcommand"));
}

// ---- put ----

#[test]
fn put_stdin_round_trips_byte_exact() {
    let name = format!("{}/value", unique_path("put-stdin"));
    let stored = "  two leading spaces\nsecond line é \t";
    qlarius_env(&moto().url)
        .args(["put", &name])
        .write_stdin(format!("{stored}\n"))
        .assert()
        .success()
        .stdout("");
    assert_eq!(stored_value(&name), (stored.to_string(), 1));
}

#[test]
fn put_strips_exactly_one_newline() {
    let cases = [
        ("fake-crlf\r\n", "fake-crlf"),
        ("fake-two\n\n", "fake-two\n"),
        ("fake-none", "fake-none"),
    ];
    for (input, expected) in cases {
        let name = format!("{}/value", unique_path("put-newline"));
        qlarius_env(&moto().url).args(["put", &name]).write_stdin(input).assert().success();
        assert_eq!(stored_value(&name).0, expected, "{input:?}");
    }
    let name = format!("{}/pem", unique_path("put-keep"));
    let pem = "-----BEGIN FAKE-----\nAAAA\n-----END FAKE-----\n";
    qlarius_env(&moto().url)
        .args(["put", &name, "--keep-newline"])
        .write_stdin(pem)
        .assert()
        .success();
    assert_eq!(stored_value(&name).0, pem);
}

/// Drives a command on a pseudo-terminal: waits for each prompt and for echo to be off
/// before typing the matching answer, then prints everything the terminal showed.
const PTY_DRIVER: &str = r#"
import os, pty, signal, sys, termios, time
signal.alarm(60)  # bounds the whole run, whatever the command does
answers = sys.argv[1].split("|")
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
seen = b""
def read():
    global seen
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        return False
    seen += chunk
    return bool(chunk)
for prompt, answer in zip([b"Value for", b"Repeat the value"], answers):
    while prompt not in seen:
        if not read():
            break
    # rpassword prints the prompt before it turns echo off; type only once it is off.
    for _ in range(500):
        if not termios.tcgetattr(fd)[3] & termios.ECHO:
            break
        time.sleep(0.01)
    os.write(fd, answer.encode() + b"\n")
while read():
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

fn put_on_terminal(name: &str, first: &str, second: &str) -> (i32, String) {
    let binary = assert_cmd::cargo::cargo_bin("qlarius-env");
    let output = std::process::Command::new(venv_bin("python"))
        .args(["-c", PTY_DRIVER, &format!("{first}|{second}")])
        .arg(binary)
        .args(["put", name])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTONLY")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", &moto().url)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn put_prompts_without_echo_on_terminal() {
    let name = format!("{}/token", unique_path("put-tty"));
    let (code, terminal) = put_on_terminal(&name, "CANARY-tty-3c4d", "CANARY-tty-3c4d");

    assert_eq!(code, 0, "{terminal}");
    assert!(terminal.contains(&format!("Value for {name}: ")), "{terminal}");
    assert!(terminal.contains("Repeat the value: "), "{terminal}");
    assert_absent(&terminal, "CANARY", "terminal");
    assert_eq!(stored_value(&name).0, "CANARY-tty-3c4d");
}

#[test]
fn put_rejects_differing_entries() {
    let name = format!("{}/token", unique_path("put-tty-differ"));
    let (code, terminal) = put_on_terminal(&name, "fake-first", "fake-second");

    assert_eq!(code, 65, "{terminal}");
    assert!(terminal.contains("the two entries differ; nothing was stored"), "{terminal}");
}

#[test]
fn put_generate_stores_random_key() {
    let name = format!("{}/cloak-key", unique_path("put-generate"));
    let (code, stdout, stderr) = run({
        let mut command = qlarius_env(&moto().url);
        command.args(["put", &name, "--generate", "32"]);
        command
    });
    assert_eq!(code, 0, "{stderr}");

    let (value, version) = stored_value(&name);
    assert_eq!(version, 1);
    let key = base64::engine::general_purpose::STANDARD.decode(&value).unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(stdout, "");
    assert_absent(&stderr, &value, "stderr");
}

#[test]
fn put_needs_overwrite_for_existing() {
    let name = format!("{}/token", unique_path("put-overwrite"));
    put_parameters(&[secure(name.clone(), "fake-original")]);

    qlarius_env(&moto().url)
        .args(["put", &name])
        .write_stdin("fake-replacement\n")
        .assert()
        .code(73)
        .stderr(predicate::str::contains(format!("parameter {name} already exists")))
        .stderr(predicate::str::contains("--overwrite"));
    assert_eq!(stored_value(&name), ("fake-original".to_string(), 1));

    qlarius_env(&moto().url)
        .args(["put", &name, "--overwrite"])
        .write_stdin("fake-replacement\n")
        .assert()
        .success();
    assert_eq!(stored_value(&name), ("fake-replacement".to_string(), 2));
}

#[test]
fn put_value_never_in_output_or_logs() {
    let name = format!("{}/token", unique_path("put-quiet"));
    let canary = "CANARY-put-5e1f0d";
    let mut command = qlarius_env(&moto().url);
    command
        .env("QLARIUS_ENV_LOG", "trace")
        .args(["-vv", "put", &name, "--description", "fake token"])
        .write_stdin(canary);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("stored {name} as a SecureString, version 1")), "{stderr}");
    assert_absent(&stdout, canary, "stdout");
    assert_absent(&stderr, canary, "stderr");
    assert_eq!(stored_value(&name).0, canary);
}

#[test]
fn put_redacts_value_echoed_by_aws() {
    let canary = "CANARY-echo-9b8a7c";
    let fake = FakeAws::start(vec![Reply::error(
        400,
        "ValidationException",
        &format!("1 validation error detected: Value '{canary}' at 'value' failed to satisfy constraint"),
    )]);
    let mut command = qlarius_env(&fake.url);
    command.args(["put", "/fake/token"]).write_stdin(canary);
    let (code, stdout, stderr) = run(command);

    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("PutParameter /fake/token failed: ValidationException"), "{stderr}");
    assert!(stderr.contains("Value '[redacted]' at 'value'"), "{stderr}");
    assert_absent(&stdout, canary, "stdout");
    assert_absent(&stderr, canary, "stderr");
    assert_eq!(fake.count("PutParameter"), 1);
}

#[test]
fn put_kms_denial_names_encrypt() {
    let fake = FakeAws::start(vec![Reply::error(
        400,
        "AccessDeniedException",
        "User: arn:aws:iam::111122223333:user/ops is not authorized to perform: kms:Encrypt",
    )]);
    qlarius_env(&fake.url)
        .args(["put", "/fake/token", "--key-id", "alias/app"])
        .write_stdin("fake-token-value")
        .assert()
        .code(77)
        .stderr(predicate::str::contains("hint: the caller needs kms:Encrypt"))
        .stderr(predicate::str::contains("fake-token-value").not());
}

#[test]
fn put_value_argument_is_not_echoed() {
    let fake = FakeAws::start(vec![Reply::ok("{}")]);
    qlarius_env(&fake.url)
        .args(["put", "/fake/token", "CANARY-argv-77aa"])
        .assert()
        .code(64)
        .stderr(predicate::str::contains("not as an argument; nothing was stored"))
        .stderr(predicate::str::contains("CANARY").not());
    assert_eq!(fake.count("PutParameter"), 0);
}

#[test]
fn put_rejects_bad_input_before_sending() {
    let fake = FakeAws::start(vec![Reply::ok("{}")]);
    let cases: [(&[&str], &[u8], i32); 5] = [
        (&["put", "/fake/empty"], b"\n", 65),
        (&["put", "/fake/nul"], b"a\0b", 65),
        (&["put", "/fake/binary"], b"\xff\xfe", 65),
        (&["put", "/fake/long"], &[b'x'; 4097], 65),
        (&["put", "fake/no-slash"], b"value", 64),
    ];
    for (args, input, expected) in cases {
        qlarius_env(&fake.url)
            .args(args)
            .write_stdin(input.to_vec())
            .assert()
            .code(expected);
    }
    assert_eq!(fake.count("PutParameter"), 0);
}

// ---- keygen ----

#[test]
fn keygen_prints_base64_key() {
    for (args, bytes) in [(&["keygen"][..], 32usize), (&["keygen", "--bytes", "64"][..], 64)] {
        let output = qlarius_env("http://127.0.0.1:9").args(args).output().unwrap();
        assert!(output.status.success());
        let key = String::from_utf8(output.stdout).unwrap();
        assert!(!key.ends_with('\n'), "no newline outside a terminal: {key:?}");
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')),
            "{key}"
        );
        assert_eq!(key.len(), bytes.div_ceil(3) * 4);
        let decoded = base64::engine::general_purpose::STANDARD.decode(&key).unwrap();
        assert_eq!(decoded.len(), bytes);
    }
}

#[test]
fn keygen_rejects_short_key() {
    qlarius_env("http://127.0.0.1:9")
        .args(["keygen", "--bytes", "8"])
        .assert()
        .code(64);
}

// ---- policy ----

#[test]
fn policy_matches_snapshot() {
    let output = qlarius_env("http://127.0.0.1:9")
        .args([
            "policy",
            "--account-id",
            "111122223333",
            "--region",
            "eu-west-1",
            "--path",
            "/qlarius",
            "--path",
            "/shared/",
            "--key-id",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "--check",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text, include_str!("expected/policy.json"));
}

#[test]
fn policy_lists_only_configured_arns() {
    let output = qlarius_env(&moto().url)
        .args(["policy", "--path", "/myapp/prod"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let policy: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().unwrap();
    let actions: Vec<&str> = statements.iter().map(|s| s["Action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["ssm:GetParametersByPath", "ssm:GetParameters", "kms:Decrypt"]);
    for statement in &statements[..2] {
        for resource in statement["Resource"].as_array().unwrap() {
            let resource = resource.as_str().unwrap();
            assert!(
                resource.starts_with("arn:aws:ssm:us-east-1:123456789012:parameter/myapp/prod"),
                "{resource}"
            );
        }
    }
    assert_eq!(statements[2]["Resource"], "arn:aws:kms:us-east-1:123456789012:key/*");
    assert_eq!(
        statements[2]["Condition"]["StringEquals"]["kms:ViaService"],
        "ssm.us-east-1.amazonaws.com"
    );
}

/// Runs `aws iam create-policy` against moto with `document`; moto validates the
/// document's grammar (effects, action prefixes, ARNs, condition operators) as IAM does.
fn moto_accepts_policy(document: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, document).unwrap();
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("qlarius-env-{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    std::process::Command::new(venv_bin("aws"))
        .args(["--endpoint-url", &moto().url, "iam", "create-policy", "--policy-name", &name])
        .arg("--policy-document")
        .arg(format!("file://{}", file.display()))
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTONLY")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap()
}

#[test]
fn policy_passes_moto_iam_validation() {
    let variants: [&[&str]; 3] = [
        &["policy", "--account-id", "111122223333"],
        &["policy", "--account-id", "111122223333", "--path", "/", "--key-id", "1234abcd-12ab", "--check"],
        &["policy", "--account-id", "111122223333", "--path", "/a,/b/c", "--key-id", "alias/app"],
    ];
    for args in variants {
        let output = qlarius_env(&moto().url).args(args).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let document = String::from_utf8(output.stdout).unwrap();

        let created = moto_accepts_policy(&document);
        assert!(created.status.success(), "{args:?}: {}", String::from_utf8_lossy(&created.stderr));
    }

    // The validator runs: a broken effect is rejected.
    let broken = include_str!("expected/policy.json").replace("\"Allow\"", "\"Maybe\"");
    let rejected = moto_accepts_policy(&broken);
    assert!(!rejected.status.success());
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("MalformedPolicyDocument"));
}

// ---- help, completions, man ----

#[test]
fn every_subcommand_has_examples() {
    for subcommand in ["check", "put", "keygen", "policy", "completions", "man"] {
        qlarius_env("http://127.0.0.1:9")
            .args([subcommand, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:\n   qlarius-env"));
    }
}

#[test]
fn completions_and_man_page_generate() {
    qlarius_env("http://127.0.0.1:9")
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("qlarius-env"))
        .stdout(predicate::str::contains("keygen"));
    qlarius_env("http://127.0.0.1:9")
        .args(["man"])
        .assert()
        .success()
        .stdout(predicate::str::contains(".TH qlarius-env 1"));

    let dir = tempfile::tempdir().unwrap();
    qlarius_env("http://127.0.0.1:9")
        .args(["man", "--dir"])
        .arg(dir.path())
        .assert()
        .success();
    for page in ["qlarius-env.1", "qlarius-env-check.1", "qlarius-env-put.1"] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
}
