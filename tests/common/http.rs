//! Small loopback HTTP servers for the credential and proxy tests: a server whose replies
//! come from a closure (fake STS, SSO portal, container credentials endpoint, instance
//! metadata service), and a forward proxy that records what it was asked.
//!
//! Every connection is served on its own thread; a stalled reply is bounded in time so
//! that no test can hang for long.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Maximum time a `Stall` reply keeps a connection open.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// One request as a loopback server received it.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    /// The request target as sent: a path, or an absolute URI for a proxy.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpRequest {
    /// The value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug)]
pub enum HttpReply {
    Response {
        status: u16,
        content_type: &'static str,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Reads the request and sends no response (until the stall limit).
    Stall,
}

impl HttpReply {
    pub fn json(body: impl Into<String>) -> HttpReply {
        HttpReply::Response {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn xml(body: impl Into<String>) -> HttpReply {
        HttpReply::Response {
            status: 200,
            content_type: "text/xml",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> HttpReply {
        HttpReply::Response {
            status,
            content_type: "text/plain",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> HttpReply {
        if let HttpReply::Response { headers, .. } = &mut self {
            headers.push((name, value.into()));
        }
        self
    }
}

type Handler = dyn Fn(&HttpRequest) -> HttpReply + Send + Sync;

/// A loopback HTTP server that replies to each request with `handler`.
pub struct HttpServer {
    pub url: String,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
}

impl HttpServer {
    pub fn start(handler: impl Fn(&HttpRequest) -> HttpReply + Send + Sync + 'static) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);

        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let recorded = recorded.clone();
                let handler = handler.clone();
                std::thread::spawn(move || serve(stream, &recorded, &*handler));
            }
        });
        HttpServer { url, requests }
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, recorded: &Mutex<Vec<HttpRequest>>, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        recorded.lock().unwrap().push(request.clone());
        match handler(&request) {
            HttpReply::Response {
                status,
                content_type,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
                    if status < 400 { "OK" } else { "Error" },
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err() {
                    return;
                }
            }
            HttpReply::Stall => {
                std::thread::sleep(STALL_LIMIT);
                return;
            }
        }
    }
}

/// Reads one request: the request line, headers, and a body of Content-Length bytes.
pub fn read_request(reader: &mut impl BufRead) -> Option<HttpRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();

    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A forward proxy on loopback. It forwards absolute-URI requests (plain HTTP through a
/// proxy) and tunnels CONNECT requests, but only to 127.0.0.1, and rejects any other
/// destination with 403. With credentials, it requires Basic authentication.
pub struct Proxy {
    pub url: String,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
}

impl Proxy {
    /// Starts the proxy. `credentials` is `Some(("user", "password"))` for a proxy that
    /// rejects requests without them with 407.
    pub fn start(credentials: Option<(&str, &str)>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let expected = credentials.map(|(user, password)| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        });
        let requests = Arc::new(Mutex::new(Vec::new()));

        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let recorded = recorded.clone();
                let expected = expected.clone();
                std::thread::spawn(move || proxy_connection(stream, &recorded, expected.as_deref()));
            }
        });
        Proxy { url, requests }
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn proxy_connection(stream: TcpStream, recorded: &Mutex<Vec<HttpRequest>>, expected: Option<&str>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut client = stream;
    let Some(request) = read_request(&mut reader) else { return };
    recorded.lock().unwrap().push(request.clone());

    let authorized = match expected {
        None => true,
        Some(expected) => request.header("proxy-authorization") == Some(expected),
    };
    if !authorized {
        let _ = client.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
        );
        return;
    }

    let destination = if request.method == "CONNECT" {
        request.target.clone()
    } else {
        let Some(rest) = request.target.strip_prefix("http://") else {
            let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            return;
        };
        rest.split('/').next().unwrap_or_default().to_string()
    };
    // The proxy only ever connects to loopback, whatever it is asked.
    if !destination.starts_with("127.0.0.1:") {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(&destination) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };

    if request.method == "CONNECT" {
        if client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").is_err() {
            return;
        }
    } else {
        // Forward the request in origin form, then relay both ways.
        let path = request.target["http://".len() + destination.len()..].to_string();
        let mut head = format!("{} {} HTTP/1.1\r\n", request.method, if path.is_empty() { "/" } else { &path });
        for (name, value) in &request.headers {
            if !name.eq_ignore_ascii_case("proxy-authorization") {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str("\r\n");
        if upstream.write_all(head.as_bytes()).is_err() || upstream.write_all(request.body.as_bytes()).is_err() {
            return;
        }
    }
    relay(reader, client, upstream);
}

/// Copies bytes both ways until either side closes. Bytes already buffered from the
/// client are sent first.
fn relay(reader: BufReader<TcpStream>, client: TcpStream, upstream: TcpStream) {
    let buffered = reader.buffer().to_vec();
    let mut to_upstream = upstream.try_clone().unwrap();
    let mut to_client = client;
    let mut from_upstream = upstream;
    let _ = to_upstream.write_all(&buffered);
    let mut from_client = reader.into_inner();
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_upstream);
        let _ = to_upstream.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut from_upstream, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// An HTTPS server on 127.0.0.1 that replies to every request with `body` as a 200 JSON
/// response, using the test certificate in `tests/data` (trusted through SSL_CERT_FILE
/// set to [`TEST_CA`]).
pub struct TlsServer {
    pub url: String,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
}

/// The CA that signed the test server's certificate.
pub const TEST_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/loopback-ca.pem");

impl TlsServer {
    pub fn start(body: String) -> TlsServer {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};

        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(format!("{data}/loopback-cert.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{data}/loopback-key.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (config, recorded, body) = (config.clone(), recorded.clone(), body.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(STALL_LIMIT));
                    let Ok(connection) = rustls::ServerConnection::new(config) else { return };
                    let mut tls = BufReader::new(rustls::StreamOwned::new(connection, stream));
                    while let Some(request) = read_request(&mut tls) {
                        recorded.lock().unwrap().push(request);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        let writer = tls.get_mut();
                        if writer.write_all(head.as_bytes()).is_err()
                            || writer.write_all(body.as_bytes()).is_err()
                            || writer.flush().is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        TlsServer { url, requests }
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }
}
