//! Running qlarius-env as a supervisor in the background: reading its output line by line
//! with bounded waits, signalling it, and running it as PID 1 of a new PID namespace.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The maximum time any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Returns the command line of the Python test app that prints `ready PID VALUE` and one `got NAME` line per signal.
pub fn echo_app() -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/echo_signals.py");
    vec![
        super::venv_bin("python3").display().to_string(),
        script.display().to_string(),
    ]
}

/// Builds a qlarius-env command with a clean environment, see [`clean_environment`].
/// With `namespace`, it runs under `unshare --pid --fork --mount-proc`, as PID 1.
pub fn supervisor_command(endpoint: &str, namespace: bool) -> Command {
    let binary = assert_cmd::cargo::cargo_bin("qlarius-env");
    let mut command = if namespace {
        let mut command = Command::new("unshare");
        // --kill-child: if unshare dies, the kernel kills the namespace's PID 1 too.
        command.args(["--pid", "--fork", "--mount-proc", "--kill-child"]).arg(binary);
        command
    } else {
        Command::new(binary)
    };
    clean_environment(&mut command, endpoint);
    command
}

/// Replaces the environment of `command` with one like [`super::qlarius_env`]'s: fake
/// static credentials, the region, the endpoint, and no way to real AWS or instance
/// metadata.
pub fn clean_environment(command: &mut Command, endpoint: &str) {
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        // Empty files rather than missing ones, about which the SDK logs a warning that
        // would spoil the tests of an empty stderr.
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTONLY")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_REGION", super::REGION)
        .env("AWS_ENDPOINT_URL", endpoint);
}

/// A supervisor running in the background. Dropping it kills it.
pub struct Running {
    pub child: Child,
    input: ChildStdin,
    lines: Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    pub fn start(mut command: Command) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start qlarius-env");

        let input = child.stdin.take().unwrap();
        let (sender, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // A terminal ends lines with CR LF.
                let line = line.trim_end_matches('\r').to_string();
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                let mut text = collected.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Running {
            child,
            input,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for the next stdout line that starts with `prefix`, skipping others.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no line starting with {prefix:?} within {WAIT:?}; stdout so far: {:?}; stderr: {}",
                    self.seen,
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "qlarius-env closed stdout before a line starting with {prefix:?}; stdout: {:?}; stderr: {}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// Writes `bytes` to qlarius-env's standard input.
    pub fn write_input(&mut self, bytes: &[u8]) {
        self.input.write_all(bytes).unwrap();
        self.input.flush().unwrap();
    }

    /// Reads the stdout lines already printed, without waiting, into `seen`.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Waits until stderr contains `text`.
    pub fn expect_stderr(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "stderr has no {text:?} within {WAIT:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Returns the pid of qlarius-env itself: the spawned process, or under unshare, its child.
    pub fn supervisor_pid(&self, namespace: bool) -> Pid {
        let pid = self.child.id();
        if !namespace {
            return Pid::from_raw(pid as i32);
        }
        let path = format!("/proc/{pid}/task/{pid}/children");
        let deadline = Instant::now() + WAIT;
        loop {
            let children = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(first) = children.split_whitespace().next() {
                return Pid::from_raw(first.parse().unwrap());
            }
            assert!(Instant::now() < deadline, "unshare started no child");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, pid: Pid, signal: Signal) {
        kill(pid, signal).unwrap_or_else(|e| panic!("cannot send {signal} to {pid}: {e}"));
    }

    /// Waits for qlarius-env to exit, then reads the rest of stdout.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "qlarius-env did not exit within {WAIT:?}; stdout: {:?}; stderr: {}",
                self.seen,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        status
    }

    /// Tells whether qlarius-env is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Running {
    /// Stops qlarius-env with TERM, which it forwards, so that no test app outlives the
    /// test; KILL after five seconds.
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
