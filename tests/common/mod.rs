//! Test harness: a moto Parameter Store on loopback, a scriptable fake AWS endpoint for
//! faults moto cannot produce, and a command builder for the qlarius-env binary with a
//! clean, loopback-only environment.
#![allow(dead_code)]

pub mod fake;
pub mod http;
pub mod supervised;

use assert_cmd::Command;
use aws_sdk_ssm::types::{ParameterTier, ParameterType};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";

/// A moto server shared by every test in one test binary. Tests keep apart by using
/// their own path, from [`unique_path`].
pub struct Moto {
    pub url: String,
}

/// Starts moto on a free loopback port the first time it is called.
///
/// The server is spawned from a thread that lives as long as the test process and with
/// `PR_SET_PDEATHSIG`, so the kernel stops it when the tests end, even on a panic.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let port = free_port();
        let server = venv_bin("moto_server");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut command = std::process::Command::new(&server);
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                        .map_err(std::io::Error::from)
                });
            }
            let mut child = command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
            ready_tx.send(()).unwrap();
            let _ = child.wait();
        });
        ready_rx.recv().unwrap();
        wait_for_port(port, Duration::from_secs(60));
        Moto {
            url: format!("http://127.0.0.1:{port}"),
        }
    })
}

/// Returns the path of a program installed in the project's virtual environment by `scripts/test.sh`.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("QLARIUS_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} not found: run scripts/test.sh, which installs moto and the AWS CLI into .venv",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, limit: Duration) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < limit, "moto did not start on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Returns a path no other test uses, such as `/t/pagination-7`.
pub fn unique_path(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "/t/{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A parameter to create in moto.
pub struct Put<'a> {
    pub name: String,
    pub value: &'a str,
    pub kind: ParameterType,
    pub advanced: bool,
}

pub fn secure(name: impl Into<String>, value: &str) -> Put<'_> {
    Put {
        name: name.into(),
        value,
        kind: ParameterType::SecureString,
        advanced: false,
    }
}

pub fn plain(name: impl Into<String>, value: &str) -> Put<'_> {
    Put {
        name: name.into(),
        value,
        kind: ParameterType::String,
        advanced: false,
    }
}

/// Runs a future to completion on a fresh single-threaded runtime.
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Creates parameters in moto with PutParameter, as an operator's SDK or CLI would.
pub fn put_parameters(parameters: &[Put<'_>]) {
    let moto = moto();
    block_on(async {
        let client = ssm_client(&moto.url);
        for p in parameters {
            client
                .put_parameter()
                .name(&p.name)
                .value(p.value)
                .r#type(p.kind.clone())
                .tier(if p.advanced {
                    ParameterTier::Advanced
                } else {
                    ParameterTier::Standard
                })
                .overwrite(true)
                .send()
                .await
                .unwrap_or_else(|e| panic!("PutParameter {} failed: {e:?}", p.name));
        }
    });
}

/// Adds a label to a version of a parameter in moto.
pub fn label_version(name: &str, version: i64, label: &str) {
    let moto = moto();
    block_on(async {
        ssm_client(&moto.url)
            .label_parameter_version()
            .name(name)
            .parameter_version(version)
            .labels(label)
            .send()
            .await
            .unwrap();
    });
}

pub fn ssm_client(url: &str) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "AKIDTESTONLY", "test-secret-key", None, None, "tests",
        ))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// Returns the four Qlarius parameters with obvious fake values, under `prefix` (for example
/// `/qlarius` or a unique path).
pub fn qlarius_parameters(prefix: &str) -> Vec<(String, String)> {
    [
        ("twilio/account-sid", "ACfake0000000000000000000000000000"),
        ("twilio/auth-token", "fake-auth-token-0000"),
        ("twilio/verify-service-sid", "VAfake0000000000000000000000000000"),
        ("cloak-key", "ZmFrZS1jbG9hay1rZXktZm9yLXRlc3RzLW9ubHkhIQ=="),
    ]
    .iter()
    .map(|(n, v)| (format!("{prefix}/{n}"), v.to_string()))
    .collect()
}

/// Returns the whole environment a test gives qlarius-env: static fake credentials, a region,
/// the endpoint, and no path to real AWS, profile files or instance metadata.
pub fn base_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", "/nonexistent".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_ACCESS_KEY_ID", "AKIDTESTONLY".into()),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_ENDPOINT_URL", endpoint.into()),
    ]
}

/// Builds a qlarius-env command whose environment is exactly [`base_env`].
pub fn qlarius_env(endpoint: &str) -> Command {
    let mut command = Command::cargo_bin("qlarius-env").unwrap();
    command
        .env_clear()
        .envs(base_env(endpoint))
        .timeout(Duration::from_secs(120));
    command
}

/// Runs `printenv -0 NAME` under qlarius-env and returns the value's exact bytes.
pub fn value_seen_by_child(mut command: Command, name: &str) -> Vec<u8> {
    let output = command.args(["--", "printenv", "-0", name]).output().unwrap();
    assert!(
        output.status.success(),
        "qlarius-env failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut value = output.stdout;
    assert_eq!(value.pop(), Some(0), "printenv -0 ends with NUL");
    value
}

/// Reads a whole stream into a string, for child processes spawned without assert_cmd.
pub fn read_all(mut reader: impl Read) -> String {
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    text
}
