//! Which parameters become which variables: maps, versions, labels, Secrets Manager
//! references, case, existing variables and protected names, against moto.

mod common;

use common::fake::{FakeAws, Reply, page};
use common::*;
use predicates::prelude::*;

/// Writes `/db/password` twice (v1, then v2), labels version 1 `prod`, and adds an
/// unlabelled `/db/user`.
fn versioned(path: &str) {
    put_parameters(&[secure(format!("{path}/db/password"), "v1")]);
    put_parameters(&[secure(format!("{path}/db/password"), "v2")]);
    put_parameters(&[plain(format!("{path}/db/user"), "u")]);
    label_version(&format!("{path}/db/password"), 1, "prod");
}

fn printenv(mut command: assert_cmd::Command, args: &[&str], name: &str) -> Vec<u8> {
    command.args(args);
    value_seen_by_child(command, name)
}

#[test]
fn label_selects_labelled_versions() {
    // moto applies a label filter only to each parameter's latest version, whereas AWS
    // returns the labelled version. So this test labels the latest version, and the
    // older-version case is checked against the fake endpoint below.
    let path = unique_path("label");
    versioned(&path);
    label_version(&format!("{path}/db/password"), 2, "current");
    let url = &moto().url;

    assert_eq!(
        printenv(qlarius_env(url), &["--path", &path, "--label", "current"], "DB_PASSWORD"),
        b"v2"
    );
    // Parameters without the label are left out of a labelled load.
    qlarius_env(url)
        .args(["--path", &path, "--label", "current", "--", "sh", "-c", "test -z \"${DB_USER+set}\""])
        .assert()
        .success();
}

#[test]
fn label_is_sent_as_path_filter() {
    let fake = FakeAws::start(vec![Reply::ok(page(&[("/p/db/password", "v1")], None))]);
    let mut command = qlarius_env(&fake.url);
    command.args(["--path", "/p", "--label", "prod"]);
    assert_eq!(value_seen_by_child(command, "DB_PASSWORD"), b"v1");
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].body["ParameterFilters"],
        serde_json::json!([{"Key": "Label", "Option": "Equals", "Values": ["prod"]}])
    );
}

#[test]
fn unknown_label_fails_closed() {
    let path = unique_path("nolabel");
    versioned(&path);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    qlarius_env(&moto().url)
        .args(["--path", &path, "--label", "nosuch", "--", "touch"])
        .arg(&marker)
        .assert()
        .code(66)
        .stderr(predicate::str::contains(format!(
            "no parameters under {path} carry label nosuch"
        )));
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn map_selectors_pin_version_and_label() {
    let path = unique_path("selector");
    versioned(&path);
    let url = &moto().url;
    for (selector, expected) in [("", "v2"), (":1", "v1"), (":2", "v2"), (":prod", "v1")] {
        let map = format!("DB_PASSWORD={path}/db/password{selector}");
        assert_eq!(
            printenv(qlarius_env(url), &["--map", &map], "DB_PASSWORD"),
            expected.as_bytes(),
            "selector {selector:?}"
        );
    }
}

#[test]
fn missing_maps_are_listed_together() {
    let path = unique_path("mapmissing");
    versioned(&path);
    qlarius_env(&moto().url)
        .args([
            "--map", &format!("A={path}/db/password:9"),
            "--map", &format!("B={path}/nope"),
            "--map", &format!("C={path}/db/user"),
            "--", "true",
        ])
        .assert()
        .code(66)
        .stderr(predicate::str::contains(format!(
            "parameters not found: {path}/db/password:9 (for A), {path}/nope (for B)"
        )));
}

#[test]
fn map_wins_over_path_and_renames() {
    let path = unique_path("mapwins");
    put_parameters(&[
        secure(format!("{path}/db/password"), "from-path"),
        secure(format!("{path}/2fa/issuer"), "acme"),
        secure(format!("{path}-other/override"), "from-map"),
    ]);
    let url = &moto().url;

    // A map sets a variable that the path also sets, and wins.
    let override_map = format!("DB_PASSWORD={path}-other/override");
    assert_eq!(
        printenv(qlarius_env(url), &["--path", &format!("{path}/db"), "--map", &override_map], "PASSWORD"),
        b"from-path"
    );
    let output = qlarius_env(url)
        .args(["--path", &format!("{path}/db"), "--map", &override_map.replace("DB_PASSWORD", "PASSWORD")])
        .args(["--", "printenv", "PASSWORD"])
        .output()
        .unwrap();
    assert_eq!(output.stdout, b"from-map\n");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("PASSWORD from {path}-other/override replaces the one from {path}/db/password")),
        "{stderr}"
    );

    // A map renames a parameter whose converted name would be invalid.
    assert_eq!(
        printenv(qlarius_env(url), &["--map", &format!("TWO_FA_ISSUER={path}/2fa/issuer")], "TWO_FA_ISSUER"),
        b"acme"
    );
}

#[test]
fn many_maps_batch_ten_names_a_request() {
    let path = unique_path("batch");
    let names: Vec<String> = (1..=12).map(|i| format!("{path}/k{i:02}")).collect();
    let puts: Vec<Put> = names.iter().map(|n| secure(n.clone(), "x")).collect();
    put_parameters(&puts);
    let mut command = qlarius_env(&moto().url);
    for (i, name) in names.iter().enumerate() {
        command.args(["--map", &format!("K{i:02}={name}")]);
    }
    command
        .args(["--", "true"])
        .assert()
        .success()
        .stderr(predicate::str::contains("loaded 12 variables from 12 maps"))
        .stderr(predicate::str::contains("(2 requests)"));
}

#[test]
fn named_parameters_use_get_parameters_only() {
    let names: Vec<String> = (1..=11).map(|i| format!("/n/k{i:02}")).collect();
    let fake = FakeAws::start(vec![Reply::EchoNames { value: "x".into() }]);
    let mut command = qlarius_env(&fake.url);
    for (i, name) in names.iter().enumerate() {
        command.args(["--map", &format!("K{i:02}={name}")]);
    }
    command.args(["--", "true"]).assert().success();
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(fake.count("GetParameters"), 2);
    let mut sizes: Vec<usize> = requests
        .iter()
        .map(|r| r.body["Names"].as_array().unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(sizes, [1, 10]);
    for request in requests {
        assert_eq!(request.body["WithDecryption"], true);
    }
}

#[test]
fn secrets_manager_reference_is_byte_exact() {
    let secret_name = unique_path("sm").trim_start_matches('/').replace('/', "-");
    let secret = r#"{"username":"app","password":"p@ss"}"#;
    let status = std::process::Command::new(venv_bin("aws"))
        .args(["secretsmanager", "create-secret", "--name", &secret_name, "--secret-string", "file:///dev/stdin"])
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTONLY")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_ENDPOINT_URL", &moto().url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(secret.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(status.success());

    let map = format!("DB_SECRET=/aws/reference/secretsmanager/{secret_name}");
    assert_eq!(
        printenv(qlarius_env(&moto().url), &["--map", &map], "DB_SECRET"),
        secret.as_bytes()
    );
}

#[test]
fn secrets_manager_prefix_as_path_is_rejected() {
    qlarius_env("http://127.0.0.1:9")
        .args(["--path", "/aws/reference/secretsmanager", "--", "true"])
        .assert()
        .code(64)
        .stderr(predicate::str::contains("each secret must be named"));
}

#[test]
fn missing_secret_reference_is_named() {
    qlarius_env(&moto().url)
        .args(["--map", "S=/aws/reference/secretsmanager/no-such-secret-qlarius", "--", "true"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("/aws/reference/secretsmanager/no-such-secret-qlarius"));
}

#[test]
fn preserve_case_keeps_names_apart() {
    let path = unique_path("case");
    put_parameters(&[
        secure(format!("{path}/TF_VAR_instance_type"), "t3.micro"),
        secure(format!("{path}/Api_Key"), "k1"),
        secure(format!("{path}/API_KEY"), "k2"),
    ]);
    qlarius_env(&moto().url)
        .args(["--path", &path, "--preserve-case", "--", "sh", "-c", "printf '%s %s %s' \"$TF_VAR_instance_type\" \"$Api_Key\" \"$API_KEY\""])
        .assert()
        .success()
        .stdout("t3.micro k1 k2");
}

#[test]
fn no_overwrite_keeps_existing_variables() {
    let path = unique_path("keep");
    put_parameters(&[secure(format!("{path}/cloak-key"), "from-store")]);
    qlarius_env(&moto().url)
        .env("CLOAK_KEY", "local-key")
        .args(["--path", &path, "--no-overwrite", "--", "printenv", "CLOAK_KEY"])
        .assert()
        .success()
        .stdout("local-key\n")
        .stderr(predicate::str::contains("keeping CLOAK_KEY already set in the environment"))
        .stderr(predicate::str::contains("from-store").not());
}

#[test]
fn protected_names_need_an_explicit_map() {
    let path = unique_path("protected");
    put_parameters(&[
        secure(format!("{path}/path"), "/evil/bin"),
        secure(format!("{path}/ld-preload"), "/evil/lib.so"),
        secure(format!("{path}/ok"), "fine"),
    ]);
    let inherited_path = std::env::var("PATH").unwrap();
    let output = qlarius_env(&moto().url)
        .args(["--path", &path, "--", "sh", "-c", "printf '%s|%s|%s' \"$PATH\" \"${LD_PRELOAD-unset}\" \"$OK\""])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{inherited_path}|unset|fine")
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains(&format!("skipping PATH from {path}/path")), "{stderr}");
    assert!(stderr.contains(&format!("skipping LD_PRELOAD from {path}/ld-preload")), "{stderr}");

    // An explicit map may set one.
    let map = format!("LD_PRELOAD={path}/ld-preload");
    qlarius_env(&moto().url)
        .args(["--map", &map, "--", "sh", "-c", "printf %s \"$LD_PRELOAD\""])
        .env("LD_PRELOAD", "")
        .assert()
        .stdout("/evil/lib.so");
}

#[test]
fn required_counts_mapped_variables() {
    let path = unique_path("reqmap");
    put_parameters(&[secure(format!("{path}/x"), "1")]);
    qlarius_env(&moto().url)
        .args(["--map", &format!("MAPPED={path}/x"), "--require", "MAPPED", "--", "true"])
        .assert()
        .success();
    qlarius_env(&moto().url)
        .args(["--map", &format!("MAPPED={path}/x"), "--require", "OTHER", "--", "true"])
        .assert()
        .code(66)
        .stderr(predicate::str::contains("missing required variable: OTHER"));
}

#[test]
fn plain_strings_warn_or_fail_with_require_secure() {
    let path = unique_path("plain");
    put_parameters(&[plain(format!("{path}/db/host"), "db"), secure(format!("{path}/db/password"), "pw")]);
    qlarius_env(&moto().url)
        .args(["--path", &path, "--", "true"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "not SecureString, so stored unencrypted in Parameter Store: {path}/db/host"
        )));
    qlarius_env(&moto().url)
        .args(["--path", &path, "--require-secure", "--", "true"])
        .assert()
        .code(65)
        .stderr(predicate::str::contains(format!("{path}/db/host")))
        .stderr(predicate::str::contains("db/password").not());
}

#[test]
fn map_renames_path_parameter() {
    let path = unique_path("rename");
    put_parameters(&[
        secure(format!("{path}/2fa/issuer"), "acme"),
        secure(format!("{path}/Api_Key"), "k1"),
        secure(format!("{path}/API_KEY"), "k2"),
    ]);
    qlarius_env(&moto().url)
        .args([
            "--path", &path,
            "--map", &format!("TWO_FA_ISSUER={path}/2fa/issuer"),
            "--map", &format!("LEGACY_API_KEY={path}/Api_Key"),
            "--", "sh", "-c", "printf '%s %s %s' \"$TWO_FA_ISSUER\" \"$LEGACY_API_KEY\" \"$API_KEY\"",
        ])
        .assert()
        .success()
        .stdout("acme k1 k2");
}

#[test]
fn boolean_variables_accept_one_and_zero() {
    let path = unique_path("falsey");
    qlarius_env(&moto().url)
        .env("QLARIUS_ENV_ALLOW_EMPTY", "1")
        .args(["--path", &path, "--", "true"])
        .assert()
        .success();
    qlarius_env(&moto().url)
        .env("QLARIUS_ENV_ALLOW_EMPTY", "0")
        .args(["--path", &path, "--", "true"])
        .assert()
        .code(66);
}
