//! A scriptable HTTP endpoint on loopback that answers like an AWS JSON-protocol service,
//! for faults moto cannot produce: throttling, 5xx, access denied, slow or cut
//! connections, malformed bodies.
//!
//! Each request takes the next reply from the script; the last reply repeats. Every
//! connection is served on its own thread, and a stalled reply is bounded in time so
//! that no test can hang for long.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Maximum time a `Stall` reply keeps a connection open.
const STALL_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub enum Reply {
    /// An HTTP response with a JSON body.
    Json { status: u16, body: String },
    /// Waits, then sends the reply.
    Delayed(Duration, Box<Reply>),
    /// Reads the request and sends no response (until the stall limit).
    Stall,
    /// Reads the request and closes the connection without a response.
    Close,
    /// Sends the status line and headers of a 200 with a body shorter than announced.
    Truncated,
    /// Returns every requested name of a GetParameters request, each valued `value`.
    EchoNames { value: String },
    /// An HTTP response with the given status and body sent as is, for malformed bodies.
    Raw { status: u16, body: String },
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply::Json {
            status: 200,
            body: body.into(),
        }
    }

    /// Builds an AWS JSON-protocol error, as Parameter Store sends it.
    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        let body = serde_json::json!({ "__type": code, "message": message }).to_string();
        Reply::Json { status, body }
    }

    pub fn throttled() -> Reply {
        Reply::error(400, "ThrottlingException", "Rate exceeded")
    }
}

/// One request as the fake endpoint received it.
#[derive(Clone, Debug)]
pub struct Request {
    /// The `X-Amz-Target` header, for example `AmazonSSM.GetParametersByPath`.
    pub target: String,
    pub body: serde_json::Value,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct FakeAws {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeAws {
    pub fn start(script: Vec<Reply>) -> FakeAws {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new((script, 0usize)));

        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let recorded = recorded.clone();
                let script = script.clone();
                std::thread::spawn(move || serve(stream, &recorded, &script));
            }
        });
        FakeAws { url, requests }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self, target: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.target.ends_with(target))
            .count()
    }
}

fn serve(stream: TcpStream, recorded: &Mutex<Vec<Request>>, script: &Mutex<(Vec<Reply>, usize)>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let Some(request) = read_request(&mut reader) else { return };
        recorded.lock().unwrap().push(request.clone());
        let reply = {
            let mut guard = script.lock().unwrap();
            let (replies, next) = &mut *guard;
            let reply = replies[(*next).min(replies.len() - 1)].clone();
            *next += 1;
            reply
        };
        let reply = match reply {
            Reply::EchoNames { value } => echo_names(&request.body, &value),
            other => other,
        };
        if !send(&mut writer, reply) {
            return;
        }
    }
}

/// Sends one reply; returns false when the connection must end.
fn send(writer: &mut TcpStream, reply: Reply) -> bool {
    match reply {
        Reply::Json { status, body } => {
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: fake-request-{status}\r\nContent-Length: {}\r\n\r\n",
                if status < 400 { "OK" } else { "Error" },
                body.len()
            );
            writer.write_all(head.as_bytes()).is_ok() && writer.write_all(body.as_bytes()).is_ok()
        }
        Reply::Delayed(delay, reply) => {
            std::thread::sleep(delay);
            send(writer, *reply)
        }
        Reply::Stall => {
            std::thread::sleep(STALL_LIMIT);
            false
        }
        Reply::Close | Reply::EchoNames { .. } => false,
        Reply::Raw { status, body } => {
            let head = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            writer.write_all(head.as_bytes()).is_ok() && writer.write_all(body.as_bytes()).is_ok()
        }
        Reply::Truncated => {
            let _ = writer.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 500\r\n\r\n{\"Parameters\": [{\"Name\"",
            );
            false
        }
    }
}

/// Reads one request with the shared parser and keeps what the fake's tests check: the
/// target operation, the JSON body and the headers.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let request = super::http::read_request(reader)?;
    let target = request.header("x-amz-target").unwrap_or_default().to_string();
    let body = serde_json::from_str(&request.body).unwrap_or(serde_json::Value::Null);
    Some(Request {
        target,
        body,
        headers: request.headers,
    })
}

fn echo_names(request: &serde_json::Value, value: &str) -> Reply {
    let parameters: Vec<serde_json::Value> = request["Names"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|name| serde_json::json!({"Name": name, "Value": value, "Type": "SecureString", "Version": 1}))
        .collect();
    Reply::ok(serde_json::json!({"Parameters": parameters, "InvalidParameters": []}).to_string())
}

/// Builds a GetParametersByPath page body with the given `(name, value)` pairs.
pub fn page(parameters: &[(&str, &str)], next_token: Option<&str>) -> String {
    let parameters: Vec<serde_json::Value> = parameters
        .iter()
        .map(|(name, value)| {
            serde_json::json!({
                "Name": name, "Value": value, "Type": "SecureString", "Version": 1,
                "ARN": format!("arn:aws:ssm:us-east-1:111122223333:parameter{name}"),
                "DataType": "text"
            })
        })
        .collect();
    let mut body = serde_json::json!({ "Parameters": parameters });
    if let Some(token) = next_token {
        body["NextToken"] = serde_json::Value::from(token);
    }
    body.to_string()
}
