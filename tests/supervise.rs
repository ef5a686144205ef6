//! The supervising mode (--init) end to end: signal forwarding, reaping and exit statuses,
//! with qlarius-env as PID 1 of a new PID namespace, as in a container.
//!
//! The namespace tests need `unshare --pid`, which needs root (CAP_SYS_ADMIN).

mod common;

use common::supervised::*;
use common::*;
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

/// Returns an unused path, so that each test needs nothing in Parameter Store.
fn empty_path() -> String {
    unique_path("init")
}

fn init_command(namespace: bool, extra: &[&str], app: &[String]) -> Command {
    let mut command = supervisor_command(&moto().url, namespace);
    command
        .args(["--init", "--allow-empty", "--path", &empty_path()])
        .args(extra)
        .arg("--")
        .args(app);
    command
}

fn require_unshare() {
    let status = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .expect("cannot run unshare");
    assert!(
        status.success(),
        "unshare --pid --fork --mount-proc failed: these tests must run as root"
    );
}

#[test]
fn each_forwarded_signal_arrives_once() {
    require_unshare();
    let mut command = init_command(true, &[], &echo_app());
    command.env("EXIT_ON_TERM", "0");
    let mut running = Running::start(command);
    running.expect_line("ready");
    let pid1 = running.supervisor_pid(true);

    let forwarded = [
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCONT,
    ];
    for signal in forwarded {
        running.signal(pid1, signal);
        running.expect_line(&format!("got {}", &signal.as_str()[3..]));
    }
    running.signal(pid1, Signal::SIGTERM);
    running.expect_line("got TERM");
    let status = running.wait();
    assert_eq!(status.code(), Some(0), "stderr: {}", running.stderr());

    for signal in forwarded.iter().chain([&Signal::SIGTERM]) {
        let line = format!("got {}", &signal.as_str()[3..]);
        let count = running.seen.iter().filter(|l| **l == line).count();
        assert_eq!(count, 1, "{line} in {:?}", running.seen);
    }
}

#[test]
fn term_to_pid1_returns_app_status() {
    require_unshare();
    let mut command = init_command(true, &[], &echo_app());
    command.env("EXIT_ON_TERM", "3");
    let mut running = Running::start(command);
    running.expect_line("ready");

    running.signal(running.supervisor_pid(true), Signal::SIGTERM);
    running.expect_line("got TERM");
    let status = running.wait();
    assert_eq!(status.code(), Some(3), "stderr: {}", running.stderr());
}

#[test]
fn orphaned_grandchild_is_reaped() {
    require_unshare();
    let mut app = echo_app();
    app.push("orphan".into());
    let mut running = Running::start(init_command(true, &[], &app));
    running.expect_line("ready");
    let verdict = running.expect_line("orphan");
    assert_eq!(verdict, "orphan reaped", "stderr: {}", running.stderr());
}

#[test]
fn exit_statuses_pass_through() {
    require_unshare();
    for code in [0, 1, 3, 255] {
        let script = format!("exit {code}");
        let app = ["sh".to_string(), "-c".into(), script];
        let output = init_command(true, &["-qq"], &app).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "exit {code}: {stderr}");
        assert_eq!(stderr, "", "exit {code}");
    }
}

#[test]
fn signal_death_is_128_plus_n() {
    require_unshare();
    for (signal, code) in [("USR1", 138), ("KILL", 137), ("TERM", 143)] {
        let script = format!("kill -{signal} $$");
        let app = ["sh".to_string(), "-c".into(), script];
        let output = init_command(true, &["-qq"], &app).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{signal}: {stderr}");
        assert_eq!(output.status.signal(), None, "{signal}");
    }
}

#[test]
fn exited_command_leaves_stderr_silent() {
    // With --process-group, qlarius-env sends TERM to the group once the command has
    // exited; an empty group must not produce an error.
    let app = ["sh".to_string(), "-c".into(), "exit 0".into()];
    let output = init_command(false, &["-qq", "--process-group"], &app).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

/// Returns the state letter of a process from /proc (R, S, T for stopped, Z, ...).
fn process_state(pid: nix::unistd::Pid) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')').unwrap().1.trim_start().chars().next().unwrap()
}

#[test]
fn job_control_stop_stops_both() {
    // As dumb-init does: TSTP is forwarded, then qlarius-env stops itself, so that a shell
    // finds the job stopped; CONT resumes qlarius-env and is forwarded.
    let mut running = Running::start(init_command(false, &[], &echo_app()));
    let ready = running.expect_line("ready");
    let app = nix::unistd::Pid::from_raw(ready.split_whitespace().nth(1).unwrap().parse().unwrap());
    let pid = running.supervisor_pid(false);

    running.signal(pid, Signal::SIGTSTP);
    running.expect_line("got TSTP");
    let deadline = std::time::Instant::now() + WAIT;
    while process_state(pid) != 'T' {
        assert!(std::time::Instant::now() < deadline, "qlarius-env did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    running.signal(pid, Signal::SIGCONT);
    running.expect_line("got CONT");
    assert_ne!(process_state(pid), 'T');
    assert_ne!(process_state(app), 'T');
    running.signal(pid, Signal::SIGTERM);
    assert_eq!(running.wait().code(), Some(0), "stderr: {}", running.stderr());
}

#[test]
fn signals_after_exit_print_nothing() {
    // Signals keep arriving while the command runs, exits and is gone; none may produce a
    // warning or an error. SIGURG, which the Go runtime sends itself, is not handled.
    let path = unique_path("init-noise");
    put_parameters(&[secure(format!("{path}/setting"), "on")]);
    let mut command = supervisor_command(&moto().url, false);
    command.args(["-q", "--init", "--path", &path, "--", "sh", "-c", "trap '' USR1; echo started; sleep 0.3"]);
    let mut running = Running::start(command);
    running.expect_line("started");
    let pid = running.supervisor_pid(false);

    let mut sent = 0;
    while sent < 20_000 && running.is_running() {
        let signal = if sent % 2 == 0 { Signal::SIGUSR1 } else { Signal::SIGURG };
        if nix::sys::signal::kill(pid, signal).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let status = running.wait();
    assert_eq!(status.code(), Some(0), "stderr: {}", running.stderr());
    assert_eq!(running.stderr(), "");
    assert!(sent > 0);
}

#[test]
fn process_group_gets_forwarded_signals() {
    let app = echo_app().join(" ");
    // The shell ignores USR1 and TERM itself; the two apps install their own handlers.
    let script = format!("trap '' USR1 TERM; {app} & {app} & wait");
    let shell = ["sh".to_string(), "-c".into(), script];
    let mut running = Running::start(init_command(false, &["--process-group"], &shell));
    running.expect_line("ready");
    running.expect_line("ready");

    let pid = running.supervisor_pid(false);
    running.signal(pid, Signal::SIGUSR1);
    running.expect_line("got USR1");
    running.expect_line("got USR1");
    running.signal(pid, Signal::SIGTERM);
    let status = running.wait();
    assert_eq!(status.code(), Some(0), "stderr: {}", running.stderr());
    let terms = running.seen.iter().filter(|l| *l == "got TERM").count();
    assert_eq!(terms, 2, "{:?}", running.seen);
}

#[test]
fn without_group_only_the_command_is_signalled() {
    let app = echo_app().join(" ");
    let script = format!("trap 'echo shell got USR1' USR1; trap 'kill $!; exit 0' TERM; {app} & wait; wait");
    let shell = ["sh".to_string(), "-c".into(), script];
    let mut running = Running::start(init_command(false, &[], &shell));
    running.expect_line("ready");

    running.signal(running.supervisor_pid(false), Signal::SIGUSR1);
    running.expect_line("shell got USR1");
    running.signal(running.supervisor_pid(false), Signal::SIGTERM);
    running.wait();
    assert!(
        !running.seen.iter().any(|l| l == "got USR1"),
        "the app got USR1: {:?}",
        running.seen
    );
}

#[test]
fn terminal_signals_arrive_once() {
    // Under `script`, qlarius-env and the app share the foreground process group of a
    // terminal, which sends Ctrl-C (INT) and Ctrl-\ (QUIT) to both. qlarius-env must not
    // forward them a second time.
    let binary = assert_cmd::cargo::cargo_bin("qlarius-env");
    let inner = format!(
        "exec {} -qq --init --allow-empty --path {} -- {}",
        binary.display(),
        empty_path(),
        echo_app().join(" ")
    );
    let mut command = Command::new("script");
    command.args(["-qfec", &inner, "/dev/null"]);
    clean_environment(&mut command, &moto().url);
    command.env("EXIT_ON_SIGNAL", "QUIT");
    let mut running = Running::start(command);
    running.expect_line("ready");

    running.write_input(b"\x03");
    running.expect_line("got INT");
    running.write_input(b"\x1c");
    running.expect_line("got QUIT");
    let status = running.wait();
    assert_eq!(status.code(), Some(0), "stderr: {}", running.stderr());

    for line in ["got INT", "got QUIT"] {
        let count = running.seen.iter().filter(|l| *l == line).count();
        assert_eq!(count, 1, "{line} in {:?}", running.seen);
    }
}

#[test]
fn missing_command_is_127_and_unexecutable_126() {
    let output = init_command(false, &[], &["no-such-command-qlarius".to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-command-qlarius: command not found"), "{stderr}");

    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("not-executable");
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
    let output = init_command(false, &[], &[file.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(126));
}

#[test]
fn script_without_shebang_runs_with_sh() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("plain-script");
    std::fs::write(&file, "exit 7\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = init_command(false, &["-qq"], &[file.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn child_gets_default_signal_mask() {
    // SigBlk and SigIgn in /proc/self/status are grep's blocked and ignored signal masks.
    // The child must block nothing, and ignore what a command started directly ignores.
    let grep = ["grep".to_string(), "-E".into(), "^Sig(Blk|Ign)".into(), "/proc/self/status".into()];
    let direct = Command::new(&grep[0]).args(&grep[1..]).output().unwrap();
    let output = init_command(false, &["-qq"], &grep).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("SigBlk:\t0000000000000000"), "{stdout}");
    assert_eq!(stdout, String::from_utf8_lossy(&direct.stdout));
}

#[test]
fn values_reach_the_child() {
    let path = unique_path("init-values");
    put_parameters(&[secure(format!("{path}/api-key"), "fake-api-key-1234")]);
    let output = supervisor_command(&moto().url, false)
        .args(["--init", "--path", &path, "--", "printenv", "API_KEY"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "fake-api-key-1234\n");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("fake-api-key-1234"));
}
