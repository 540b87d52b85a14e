//! Test support: the real server as a child process, and small network
//! helpers (a TCP proxy that can cut connections, a TLS proxy, a fake gRPC
//! server for what the real one cannot do yet).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore_client::{Client, ClientOptions, ResumePolicy};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The server binary: $ES_SERVER_BIN, else the Bazel output next to the repo.
pub fn server_bin() -> PathBuf {
    let path = match std::env::var_os("ES_SERVER_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bazel-bin/server/eventstore"),
    };
    assert!(
        path.is_file(),
        "server binary {} not found: build //server:eventstore and set ES_SERVER_BIN",
        path.display()
    );
    path
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A real `eventstore` server (in-memory backend) on a loopback port.
pub struct TestServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl TestServer {
    /// Starts a server on a free port.
    pub async fn start() -> TestServer {
        TestServer::start_on(0).await
    }

    /// Starts a server on this port (0: a free one). Retries for a while if
    /// the port is still held by a server that just stopped. Async, so that
    /// the clients of the test keep running meanwhile.
    pub async fn start_on(port: u16) -> TestServer {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("es-rust-sdk-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let port_file = dir.join("port");
            let _ = std::fs::remove_file(&port_file);
            let mut child = Command::new(server_bin())
                .arg("--backend")
                .arg("memory")
                .arg("--bind")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--port-file")
                .arg(&port_file)
                .arg("--log-level")
                .arg("warn")
                .arg("--shutdown-grace-ms")
                .arg("500")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start the server");
            loop {
                if let Ok(text) = std::fs::read_to_string(&port_file) {
                    if let Ok(bound) = text.trim().parse::<u16>() {
                        return TestServer {
                            child: Some(child),
                            port: bound,
                            dir,
                        };
                    }
                }
                if let Some(status) = child.try_wait().unwrap() {
                    // Could not bind (e.g. the port is not free yet): retry.
                    assert!(
                        Instant::now() < deadline,
                        "server did not start on port {port}: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("server did not write its port file in time");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Graceful stop (SIGTERM): subscriptions end with UNAVAILABLE. Fails
    /// the test if the server takes more than 10 s to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let started = Instant::now();
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            while child.try_wait().unwrap().is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the server did not exit within 10 s of SIGTERM");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Crash (SIGKILL): connections are reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connected client with a short deadline.
pub async fn connect(address: &str) -> Client {
    Client::connect(ClientOptions::new(address).default_deadline(Some(Duration::from_secs(10))))
        .await
        .expect("connect")
}

/// A quick resume policy for tests.
pub fn fast_resume() -> ResumePolicy {
    ResumePolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_attempts: None,
    }
}

/// A TCP proxy in front of a server that can cut every connection and
/// refuse new ones for a while: a dropped connection with the server alive.
pub struct Proxy {
    pub port: u16,
    /// Generation: every change cuts the open connections.
    cut: watch::Sender<u64>,
    refusing: Arc<Mutex<bool>>,
    pub accepted: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = watch::channel(0u64);
        let refusing = Arc::new(Mutex::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (r, a) = (refusing.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *r.lock().unwrap() {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                a.fetch_add(1, Ordering::Relaxed);
                let mut cut_rx = cut_rx.clone();
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                    // Dropping both sockets closes them.
                });
            }
        });
        Proxy {
            port,
            cut,
            refusing,
            accepted,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        *self.refusing.lock().unwrap() = true;
        self.cut.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        *self.refusing.lock().unwrap() = false;
    }
}

/// A TLS proxy (certificate for localhost/127.0.0.1 from tests/fixtures)
/// in front of the plaintext server, speaking HTTP/2 (ALPN h2).
pub async fn tls_proxy(target: SocketAddr) -> u16 {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let certs = CertificateDer::pem_file_iter(fixtures.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixtures.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(inbound).await else {
                    return;
                };
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
            });
        }
    });
    port
}

/// What the fake gRPC server answers.
#[derive(Clone, Copy)]
pub enum FakeAnswer {
    /// A trailers-only response with this grpc-status.
    Status(u32),
    /// Nothing, ever (for deadlines).
    Hang,
    /// Like a server without AppendMany: an empty AppendResponse to
    /// `Append`, UNIMPLEMENTED to every other call.
    OnlyAppend,
}

/// A minimal gRPC server over raw HTTP/2 that records the request headers
/// and answers every call the same way; for what the real server cannot do
/// yet (authentication).
pub async fn fake_server(answer: FakeAnswer) -> (u16, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    seen.lock().unwrap().push(request.headers().clone());
                    match answer {
                        FakeAnswer::Status(code) => {
                            let response = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .header("grpc-status", code.to_string())
                                .header("grpc-message", "fake%20server")
                                .body(())
                                .unwrap();
                            let _ = respond.send_response(response, true);
                        }
                        FakeAnswer::Hang => held.push(respond),
                        FakeAnswer::OnlyAppend => {
                            let ok = request.uri().path() == "/eventstore.v1.EventStore/Append";
                            let mut response = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc");
                            if !ok {
                                response = response.header("grpc-status", "12");
                            }
                            let Ok(mut body) =
                                respond.send_response(response.body(()).unwrap(), !ok)
                            else {
                                continue;
                            };
                            if ok {
                                // One message of length 0 (an empty AppendResponse), then status 0.
                                let _ = body.send_data(From::from(&[0u8, 0, 0, 0, 0][..]), false);
                                let mut trailers = http::HeaderMap::new();
                                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                                let _ = body.send_trailers(trailers);
                            }
                        }
                    }
                }
            });
        }
    });
    (port, seen)
}
