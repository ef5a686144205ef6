//! Proof that values stay secret: a unique canary value is loaded under every logging
//! setting and through every failure class, and must appear only in the command's
//! environment, never in qlarius-env's output. A syscall trace shows that a launch
//! writes no file and passes no value in any argv.

mod common;

use common::fake::{FakeAws, Reply, page};
use common::*;
use std::process::Output;

/// Returns a value that no log line or message could contain by accident.
fn canary(tag: &str) -> String {
    format!("canary-{tag}-{}-5f0c2e91d7a4", std::process::id())
}

/// qlarius-env with every logging knob at its loudest, including the variable that makes
/// the AWS SDK log request bodies.
fn loud(endpoint: &str) -> assert_cmd::Command {
    let mut command = qlarius_env(endpoint);
    command
        .env("QLARIUS_ENV_LOG", "trace")
        .env("RUST_LOG", "trace")
        .env("LOG_SIGNABLE_BODY", "true")
        .arg("-vv");
    command
}

fn assert_hidden(output: &Output, canary: &str, case: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stdout.contains(canary), "{case}: stdout shows the value:\n{stdout}");
    assert!(!stderr.contains(canary), "{case}: stderr shows the value:\n{stderr}");
}

#[test]
fn canary_reaches_only_the_child() {
    let path = unique_path("canary-ok");
    let value = canary("ok");
    put_parameters(&[secure(format!("{path}/secret"), &value)]);
    let output = loud(&moto().url)
        .args(["--path", &path, "--", "sh", "-c"])
        .arg(format!("test \"$SECRET\" = '{value}' && echo arrived"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "arrived\n");
    assert_hidden(&output, &value, "success");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("debug:"), "-vv produced no debug lines: {stderr}");
}

#[test]
fn sdk_body_logging_variable_reaches_child_untouched() {
    let path = unique_path("canary-env");
    put_parameters(&[secure(format!("{path}/secret"), "x")]);
    loud(&moto().url)
        .args(["--path", &path, "--", "printenv", "LOG_SIGNABLE_BODY"])
        .assert()
        .success()
        .stdout("true\n");
}

#[test]
fn canary_hidden_in_every_failure_class() {
    let path = unique_path("canary-fail");
    let value = canary("fail");
    put_parameters(&[
        secure(format!("{path}/secret"), &value),
        secure(format!("{path}/a-b"), &value),
    ]);
    let collision_path = unique_path("canary-collision");
    put_parameters(&[
        secure(format!("{collision_path}/a-b"), &value),
        secure(format!("{collision_path}/a/b"), &value),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();

    let url = &moto().url;
    let cases: Vec<(&str, Vec<String>, i32)> = vec![
        ("missing", vec!["--path".into(), path.clone(), "--require".into(), "ABSENT".into(), "--".into(), "true".into()], 66),
        ("collision", vec!["--path".into(), collision_path.clone(), "--".into(), "true".into()], 65),
        ("not found", vec!["--path".into(), path.clone(), "--".into(), "no-such-command-qlarius".into()], 127),
        ("not executable", vec!["--path".into(), path.clone(), "--".into(), not_executable.display().to_string()], 126),
        ("require secure", vec!["--path".into(), path.clone(), "--require-secure".into(), "--require".into(), "NOPE".into(), "--".into(), "true".into()], 66),
    ];
    for (case, args, code) in cases {
        let output = loud(url).args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(code), "{case}: {}", String::from_utf8_lossy(&output.stderr));
        assert_hidden(&output, &value, case);
    }
}

#[test]
fn canary_hidden_when_a_later_page_fails() {
    let value = canary("pages");
    let replies = [
        ("denied", Reply::error(400, "AccessDeniedException", &format!("denied near {value}")), 77),
        ("throttled", Reply::throttled(), 75),
        ("server error", Reply::error(500, "InternalServerError", &format!("broke on {value}")), 69),
        ("malformed", Reply::ok(format!("{{\"Parameters\": [{{\"Name\": \"{value}\"")), 76),
    ];
    for (case, failure, code) in replies {
        let fake = FakeAws::start(vec![Reply::ok(page(&[("/p/secret", &value)], Some("t1"))), failure]);
        let output = loud(&fake.url)
            .env("AWS_MAX_ATTEMPTS", "2")
            .args(["--path", "/p", "--", "true"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(code), "{case}: {}", String::from_utf8_lossy(&output.stderr));
        assert_hidden(&output, &value, case);
    }
}

#[test]
fn canary_hidden_from_check() {
    let path = unique_path("canary-check");
    let value = canary("check");
    put_parameters(&[secure(format!("{path}/secret"), &value)]);
    for json in [false, true] {
        let mut command = loud(&moto().url);
        command.args(["check", "--path", &path]);
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_hidden(&output, &value, "check");
    }
}

#[test]
fn canary_hidden_from_put() {
    let name = format!("{}/secret", unique_path("canary-put"));
    let value = canary("put");
    let output = loud(&moto().url)
        .args(["put", &name])
        .write_stdin(value.clone())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_hidden(&output, &value, "put");
}

/// Installed by scripts/test.sh; the test is skipped with a message where it is missing.
fn strace() -> Option<&'static str> {
    std::path::Path::new("/usr/bin/strace")
        .exists()
        .then_some("/usr/bin/strace")
}

#[test]
fn launch_writes_no_file_and_no_value_in_argv() {
    let Some(strace) = strace() else {
        eprintln!("strace not installed; run scripts/test.sh, which installs it");
        return;
    };
    let path = unique_path("canary-strace");
    let value = canary("strace");
    put_parameters(&[secure(format!("{path}/secret"), &value)]);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");

    let binary = assert_cmd::cargo::cargo_bin("qlarius-env");
    let status = std::process::Command::new(strace)
        .args(["-f", "-qq", "-s", "100000", "-e", "trace=execve,execveat,open,openat,openat2,creat,truncate,rename,renameat,renameat2,link,linkat,symlink,symlinkat,mkdir,mkdirat", "-o"])
        .arg(&trace)
        .arg(&binary)
        .args(["--path", &path, "--", "sh", "-c", "test -n \"$SECRET\""])
        .env_clear()
        .envs(base_env(&moto().url))
        .status()
        .unwrap();
    assert!(status.success());

    let trace = std::fs::read_to_string(&trace).unwrap();
    assert!(!trace.contains(&value), "the trace shows the value:\n{trace}");
    let writes: Vec<&str> = trace
        .lines()
        .filter(|line| {
            let opens = line.contains("open") || line.contains("creat(");
            let writing = line.contains("O_WRONLY") || line.contains("O_RDWR") || line.contains("O_CREAT") || line.contains("creat(");
            let changes_tree = ["truncate(", "rename", "link(", "linkat(", "symlink", "mkdir"]
                .iter()
                .any(|call| line.contains(call));
            (opens && writing) || changes_tree
        })
        .filter(|line| !line.contains("= -1"))
        // The terminal and /dev/null are not files on disk.
        .filter(|line| !line.contains("\"/dev/"))
        .collect();
    assert!(writes.is_empty(), "the launch wrote to the filesystem:\n{}", writes.join("\n"));
    assert!(trace.contains("execve("), "the trace recorded no exec:\n{trace}");
}

#[test]
fn canary_hidden_in_supervise_modes() {
    let path = unique_path("canary-init");
    let value = canary("init");
    put_parameters(&[secure(format!("{path}/secret"), &value)]);
    let modes: [&[&str]; 2] = [&["--init"], &["--watch=500ms"]];
    for mode in modes {
        let output = loud(&moto().url)
            .args(mode)
            .args(["--path", &path, "--", "sh", "-c", "test -n \"$SECRET\" && sleep 2 && echo arrived"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "arrived\n",
            "{mode:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_hidden(&output, &value, &format!("{mode:?}"));
    }
}
