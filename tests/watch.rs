//! The watch mode (--watch) end to end against moto, with a short interval. Requests go
//! through a counting proxy on loopback, which distinguishes listing polls from decrypted loads
//! and can fail requests on demand.

mod common;

use common::supervised::*;
use common::*;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INTERVAL: &str = "--watch=200ms";

#[derive(Default)]
struct Counts {
    /// GetParametersByPath with WithDecryption=true.
    decrypted: usize,
    /// GetParametersByPath with WithDecryption=false.
    listed: usize,
    /// Requests rejected with a throttling error instead of being forwarded.
    failed: usize,
    /// The `ParameterFilters` of the last listing request.
    listing_filters: serde_json::Value,
    failing: bool,
}

/// A loopback HTTP proxy in front of moto that counts Parameter Store requests. moto
/// closes each connection after one response, so the proxy handles one request per
/// connection.
struct CountingProxy {
    url: String,
    counts: Arc<Mutex<Counts>>,
}

impl CountingProxy {
    fn start(upstream: &str) -> CountingProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let counts = shared.clone();
                let upstream = upstream.clone();
                std::thread::spawn(move || relay(stream, &upstream, &counts));
            }
        });
        CountingProxy { url, counts }
    }

    fn decrypted(&self) -> usize {
        self.counts.lock().unwrap().decrypted
    }

    fn listed(&self) -> usize {
        self.counts.lock().unwrap().listed
    }

    fn failed(&self) -> usize {
        self.counts.lock().unwrap().failed
    }

    fn set_failing(&self, failing: bool) {
        self.counts.lock().unwrap().failing = failing;
    }

    /// Waits until `count` reaches `target`.
    fn wait_for(&self, what: &str, target: usize, count: impl Fn(&CountingProxy) -> usize) {
        let deadline = Instant::now() + WAIT;
        while count(self) < target {
            assert!(Instant::now() < deadline, "fewer than {target} {what} requests within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn relay(client: TcpStream, upstream: &str, counts: &Mutex<Counts>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut writer = client;
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut target = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        head.extend_from_slice(line.as_bytes());
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "x-amz-target" => target = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }

    let failing = {
        let mut counts = counts.lock().unwrap();
        if target.ends_with("GetParametersByPath") {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if json["WithDecryption"].as_bool() == Some(true) {
                counts.decrypted += 1;
            } else {
                counts.listed += 1;
                counts.listing_filters = json["ParameterFilters"].clone();
            }
        }
        if counts.failing {
            counts.failed += 1;
        }
        counts.failing
    };
    if failing {
        let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
        let reply = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = writer.write_all(reply.as_bytes());
        return;
    }

    let Ok(mut server) = TcpStream::connect(upstream) else { return };
    if server.write_all(&head).is_err() || server.write_all(&body).is_err() {
        return;
    }
    let _ = std::io::copy(&mut server, &mut writer);
}

fn delete_parameter(name: &str) {
    block_on(async {
        ssm_client(&moto().url)
            .delete_parameter()
            .name(name)
            .send()
            .await
            .unwrap();
    });
}

/// Starts `qlarius-env --watch=200ms` on `path` (through `endpoint`) with the echo app,
/// which prints the value of WATCHED in its `ready` line.
fn watch(endpoint: &str, path: &str, extra: &[&str]) -> Running {
    let mut command = supervisor_command(endpoint, false);
    command
        .env("SHOW_VARIABLE", "WATCHED")
        .env("AWS_MAX_ATTEMPTS", "1")
        .args([INTERVAL, "--path", path])
        .args(extra)
        .arg("--")
        .args(echo_app());
    Running::start(command)
}

fn ready_lines(running: &Running) -> usize {
    running.seen.iter().filter(|l| l.starts_with("ready")).count()
}

#[test]
fn changed_value_restarts_with_new_value() {
    let path = unique_path("watch-change");
    put_parameters(&[secure(format!("{path}/watched"), "fake-value-1")]);
    let mut running = watch(&moto().url, &path, &[]);
    let first = running.expect_line("ready");
    assert!(first.ends_with(" fake-value-1"), "{first}");

    put_parameters(&[secure(format!("{path}/watched"), "fake-value-2")]);
    running.expect_line("got TERM");
    let second = running.expect_line("ready");
    assert!(second.ends_with(" fake-value-2"), "{second}");
    assert_ne!(first, second);

    let stderr = running.stderr();
    assert!(stderr.contains("changed in Parameter Store: WATCHED (changed)"), "{stderr}");
    assert!(!stderr.contains("fake-value"), "stderr shows a value: {stderr}");

    running.signal(running.supervisor_pid(false), Signal::SIGTERM);
    assert_eq!(running.wait().code(), Some(0));
}

#[test]
fn unchanged_value_needs_no_decryption() {
    let path = unique_path("watch-same");
    put_parameters(&[secure(format!("{path}/watched"), "fake-value-1")]);
    let proxy = CountingProxy::start(&moto().url);
    let mut running = watch(&proxy.url, &path, &[]);
    running.expect_line("ready");

    proxy.wait_for("listing", 5, CountingProxy::listed);
    assert_eq!(proxy.decrypted(), 1, "only the first load decrypts");
    running.drain();
    assert_eq!(ready_lines(&running), 1, "restarted: {:?}", running.seen);
    assert!(!running.seen.iter().any(|l| l.starts_with("got")), "{:?}", running.seen);
}

#[test]
fn overwrite_with_same_value_keeps_command() {
    let path = unique_path("watch-rewrite");
    put_parameters(&[secure(format!("{path}/watched"), "fake-value-1")]);
    let mut running = watch(&moto().url, &path, &[]);
    running.expect_line("ready");

    put_parameters(&[secure(format!("{path}/watched"), "fake-value-1")]);
    running.expect_stderr("no variable's value did");
    running.drain();
    assert_eq!(ready_lines(&running), 1, "restarted: {:?}", running.seen);
}

#[test]
fn signal_mode_sends_hup_without_restart() {
    let path = unique_path("watch-hup");
    put_parameters(&[secure(format!("{path}/watched"), "fake-value-1")]);
    let mut running = watch(&moto().url, &path, &["--on-change", "signal:HUP"]);
    running.expect_line("ready");

    put_parameters(&[secure(format!("{path}/watched"), "fake-value-2")]);
    running.expect_line("got HUP");
    running.expect_stderr("sending HUP to the command");
    running.drain();
    assert_eq!(ready_lines(&running), 1, "restarted: {:?}", running.seen);
    assert!(running.is_running());
}

#[test]
fn poll_failure_keeps_command_running() {
    let path = unique_path("watch-fail");
    put_parameters(&[secure(format!("{path}/watched"), "fake-value-1")]);
    let proxy = CountingProxy::start(&moto().url);
    let mut running = watch(&proxy.url, &path, &[]);
    running.expect_line("ready");

    proxy.set_failing(true);
    proxy.wait_for("failed", 3, CountingProxy::failed);
    running.expect_stderr("checking Parameter Store for changes failed (1 in a row)");
    running.expect_stderr("ThrottlingException");
    assert!(running.is_running());
    running.drain();
    assert!(!running.seen.iter().any(|l| l.starts_with("got")), "{:?}", running.seen);

    // Once Parameter Store responds again, changes are applied.
    proxy.set_failing(false);
    put_parameters(&[secure(format!("{path}/watched"), "fake-value-2")]);
    let line = running.expect_line("ready");
    assert!(line.ends_with(" fake-value-2"), "{line}");
}

#[test]
fn deleted_required_parameter_keeps_command() {
    let path = unique_path("watch-delete");
    put_parameters(&[
        secure(format!("{path}/watched"), "fake-value-1"),
        plain(format!("{path}/other"), "fake-other"),
    ]);
    let proxy = CountingProxy::start(&moto().url);
    let mut running = watch(&proxy.url, &path, &["--require", "WATCHED"]);
    running.expect_line("ready");

    delete_parameter(&format!("{path}/watched"));
    running.expect_stderr("missing required variable: WATCHED");
    running.expect_stderr("the command keeps running");
    assert!(running.is_running());

    // The rejected state is remembered: later polls do not decrypt it again.
    let decrypted = proxy.decrypted();
    let listed = proxy.listed();
    proxy.wait_for("listing", listed + 3, CountingProxy::listed);
    assert_eq!(proxy.decrypted(), decrypted);
    running.drain();
    assert_eq!(ready_lines(&running), 1, "restarted: {:?}", running.seen);
    assert!(!running.seen.iter().any(|l| l.starts_with("got")), "{:?}", running.seen);
}

#[test]
fn stubborn_command_is_killed_after_timeout() {
    let path = unique_path("watch-kill");
    put_parameters(&[secure(format!("{path}/watched"), "fake-value-1")]);
    // USR2 is a stop signal the echo app catches and survives.
    let mut running = watch(
        &moto().url,
        &path,
        &["--stop-signal", "USR2", "--stop-timeout", "300ms"],
    );
    running.expect_line("ready");

    put_parameters(&[secure(format!("{path}/watched"), "fake-value-2")]);
    running.expect_line("got USR2");
    let line = running.expect_line("ready");
    assert!(line.ends_with(" fake-value-2"), "{line}");
    running.expect_stderr("sending KILL");
}

#[test]
fn command_exit_ends_watch() {
    let path = unique_path("watch-exit");
    put_parameters(&[secure(format!("{path}/watched"), "fake-value-1")]);
    let output = supervisor_command(&moto().url, false)
        .args([INTERVAL, "--path", &path, "--", "sh", "-c", "sleep 0.5; exit 4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Starts a container credentials endpoint on loopback that hands out credentials
/// expiring in five seconds, inside the SDK's refresh margin. Returns its URL and the
/// count of requests it has served.
fn short_lived_credentials() -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/credentials", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(0usize));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            *counter.lock().unwrap() += 1;
            let expiration = humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() + Duration::from_secs(5),
            );
            let body = serde_json::json!({
                "AccessKeyId": "AKIDTESTONLY",
                "SecretAccessKey": "test-secret-key",
                "Token": "test-session-token",
                "Expiration": expiration.to_string(),
            })
            .to_string();
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut writer = stream;
            let _ = writer.write_all(reply.as_bytes());
        }
    });
    (url, hits)
}

#[test]
fn expiring_credentials_are_refreshed() {
    let path = unique_path("watch-credentials");
    put_parameters(&[secure(format!("{path}/watched"), "fake-value-1")]);
    let (credentials_url, hits) = short_lived_credentials();
    let mut command = supervisor_command(&moto().url, false);
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &credentials_url)
        .env("SHOW_VARIABLE", "WATCHED")
        .args([INTERVAL, "--path", &path, "--"])
        .args(echo_app());
    let mut running = Running::start(command);
    running.expect_line("ready");
    let at_start = *hits.lock().unwrap();

    // Each poll finds the credentials about to expire and fetches new ones; one-shot
    // credentials would never be fetched again.
    let deadline = Instant::now() + WAIT;
    while *hits.lock().unwrap() < at_start + 3 {
        assert!(
            Instant::now() < deadline,
            "credentials not refreshed within {WAIT:?}: {} fetches; stderr: {}",
            *hits.lock().unwrap(),
            running.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!running.stderr().contains("failed"), "{}", running.stderr());
    assert!(running.is_running());
}

#[test]
fn mapped_parameter_change_restarts() {
    let path = unique_path("watch-map");
    let name = format!("{path}/watched");
    put_parameters(&[secure(name.clone(), "fake-value-1")]);
    let mut command = supervisor_command(&moto().url, false);
    command
        .env("SHOW_VARIABLE", "WATCHED")
        .args([INTERVAL, "--map", &format!("WATCHED={name}"), "--"])
        .args(echo_app());
    let mut running = Running::start(command);
    let first = running.expect_line("ready");
    assert!(first.ends_with(" fake-value-1"), "{first}");

    put_parameters(&[secure(name, "fake-value-2")]);
    let second = running.expect_line("ready");
    assert!(second.ends_with(" fake-value-2"), "{second}");
    running.expect_stderr("changed in Parameter Store: WATCHED (changed)");
}

#[test]
fn moved_label_restarts() {
    // moto applies a label filter to the latest version only, where AWS finds the
    // labelled version; so each step labels the latest version. In moto, the unlabelled
    // second version briefly leaves no labelled parameter, which is rejected.
    let path = unique_path("watch-label");
    let name = format!("{path}/watched");
    put_parameters(&[secure(name.clone(), "fake-value-1")]);
    label_version(&name, 1, "live");
    let proxy = CountingProxy::start(&moto().url);
    let mut running = watch(&proxy.url, &path, &["--label", "live"]);
    let first = running.expect_line("ready");
    assert!(first.ends_with(" fake-value-1"), "{first}");

    put_parameters(&[secure(name.clone(), "fake-value-2")]);
    label_version(&name, 2, "live");
    let second = running.expect_line("ready");
    assert!(second.ends_with(" fake-value-2"), "{second}");

    let filters = proxy.counts.lock().unwrap().listing_filters.clone();
    assert_eq!(
        filters,
        serde_json::json!([{"Key": "Label", "Option": "Equals", "Values": ["live"]}])
    );
}
