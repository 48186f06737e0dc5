//! Test helpers: real backends on loopback, a small HTTP/1.1 client, a router on an ephemeral port.

use crate::router::http::ChunkScanner;
use crate::router::{AccessLog, Backend, Route, RouteTable, Router, RouterConfig, WakeResult, Waker};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

/// A [`Waker`] for routers without idling: every app without backends is stopped.
pub struct NoWaker;

impl Waker for NoWaker {
    fn wake(&self, _app: &str, _deadline: Instant) -> WakeResult {
        WakeResult::NotRunning
    }
}

/// Discards access-log lines.
pub struct NoAccessLog;

impl AccessLog for NoAccessLog {
    fn log(&self, _app: &str, _line: &str) {}
    fn enabled(&self) -> bool {
        false
    }
}

/// Serialises the tests that measure memory or load the machine.
pub static HEAVY: Mutex<()> = Mutex::new(());

/// A request as a test backend saw it (the body is consumed and only counted).
#[derive(Debug, Clone, Default)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_prefix: Vec<u8>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the handler does with the connection after a request: keep it for another request or close it.
pub type Handler = dyn Fn(&SeenRequest, &mut TcpStream) -> bool + Send + Sync;

/// A backend on 127.0.0.1 that counts accepted connections and serves each with `handler`.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    listener: Option<TcpListener>,
}

impl TestBackend {
    pub fn start(handler: Arc<Handler>) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (a, r) = (accepts.clone(), requests.clone());
        let l = listener.try_clone().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { break };
                if a.load(Ordering::SeqCst) == usize::MAX {
                    break;
                }
                a.fetch_add(1, Ordering::SeqCst);
                let (h, r) = (handler.clone(), r.clone());
                std::thread::spawn(move || serve_backend_conn(s, &*h, &r));
            }
        });
        TestBackend {
            addr,
            accepts,
            requests,
            listener: Some(listener),
        }
    }

    /// A backend answering 200 with `name` as the body (Content-Length, keep-alive).
    pub fn named(name: &'static str) -> TestBackend {
        TestBackend::start(Arc::new(move |_r: &SeenRequest, s: &mut TcpStream| {
            respond(s, 200, &[], name.as_bytes())
        }))
    }

    pub fn backend(&self, id: &str) -> Backend {
        Backend {
            addr: self.addr,
            id: id.to_string(),
        }
    }

    /// Stops accepting: later connections are refused.
    pub fn kill(&mut self) {
        self.accepts.store(usize::MAX, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        self.listener.take();
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve_backend_conn(s: TcpStream, handler: &Handler, requests: &AtomicUsize) {
    let mut write_half = s.try_clone().unwrap();
    let mut r = BufReader::with_capacity(64 * 1024, s);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let mut seen = SeenRequest {
            method: req.method.unwrap().to_string(),
            path: req.path.unwrap().to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect(),
            ..Default::default()
        };
        let upgrade = seen.header("upgrade").is_some();
        if let Some(n) = seen.header("content-length") {
            let n: u64 = n.parse().unwrap();
            seen.body_len = consume(&mut r, n, &mut seen.body_prefix);
        } else if seen.header("transfer-encoding").is_some() {
            let mut sc = ChunkScanner::default();
            let mut prefix = Vec::new();
            let mut len = 0u64;
            while !sc.done() {
                let buf = r.fill_buf().unwrap();
                if buf.is_empty() {
                    return;
                }
                let k = sc
                    .scan(buf, |d| {
                        len += d.len() as u64;
                        if prefix.len() < 1024 {
                            prefix.extend_from_slice(&d[..d.len().min(1024)]);
                        }
                    })
                    .unwrap();
                r.consume(k);
            }
            seen.body_len = len;
            seen.body_prefix = prefix;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        if upgrade {
            // Bytes already buffered belong to the upgraded protocol.
            let pending = r.buffer().to_vec();
            let mut s = r.into_inner();
            handler(&seen, &mut write_half);
            if !pending.is_empty() {
                write_half.write_all(&pending).unwrap();
            }
            let mut b = [0u8; 4096];
            loop {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if write_half.write_all(&b[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        if !handler(&seen, &mut write_half) {
            return;
        }
    }
}

fn consume(r: &mut impl BufRead, mut n: u64, prefix: &mut Vec<u8>) -> u64 {
    let total = n;
    while n > 0 {
        let buf = r.fill_buf().unwrap();
        if buf.is_empty() {
            break;
        }
        let k = (buf.len() as u64).min(n) as usize;
        if prefix.len() < 1024 {
            prefix.extend_from_slice(&buf[..k.min(1024)]);
        }
        r.consume(k);
        n -= k as u64;
    }
    total - n
}

/// Writes a Content-Length response; returns true (keep the connection).
pub fn respond(s: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
    let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).is_ok()
}

/// A response read by [`Client`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client over any stream.
pub struct Client<S: Read + Write> {
    pub r: BufReader<S>,
}

impl Client<TcpStream> {
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { r: BufReader::new(s) }
    }
}

impl<S: Read + Write> Client<S> {
    pub fn send(&mut self, raw: &[u8]) {
        self.r.get_mut().write_all(raw).unwrap();
    }

    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        self.read_response(false)
    }

    /// Reads one response head, then its body (Content-Length, chunked, or to EOF).
    pub fn read_response(&mut self, head_only: bool) -> Response {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.r.read_until(b'\n', &mut line).unwrap();
            assert!(
                n > 0,
                "connection closed before a response; got {:?}",
                String::from_utf8_lossy(&head)
            );
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&head).unwrap();
        let mut out = Response {
            status: resp.code.unwrap(),
            headers: resp
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect(),
            body: Vec::new(),
        };
        if head_only || out.status == 101 || out.status == 304 || out.status == 204 {
            return out;
        }
        if let Some(n) = out.header("content-length") {
            let n: usize = n.parse().unwrap();
            out.body = vec![0; n];
            self.r.read_exact(&mut out.body).unwrap();
        } else if out.header("transfer-encoding").is_some() {
            let mut sc = ChunkScanner::default();
            let mut body = Vec::new();
            while !sc.done() {
                let buf = self.r.fill_buf().unwrap();
                assert!(!buf.is_empty(), "chunked body cut");
                let k = sc.scan(buf, |d| body.extend_from_slice(d)).unwrap();
                self.r.consume(k);
            }
            out.body = body;
        } else {
            self.r.read_to_end(&mut out.body).unwrap();
        }
        out
    }
}

/// One request on a new connection.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    Client::connect(addr).get(host, path)
}

/// An access log that keeps its lines.
#[derive(Default)]
pub struct MemLog(pub Mutex<Vec<(String, String)>>);

impl AccessLog for MemLog {
    fn log(&self, app: &str, line: &str) {
        self.0.lock().unwrap().push((app.to_string(), line.to_string()));
    }
}

/// A router serving plain HTTP on an ephemeral loopback port.
pub struct TestRouter {
    pub router: Router,
    pub addr: SocketAddr,
    pub log: Arc<MemLog>,
}

impl TestRouter {
    pub fn start(cfg: RouterConfig, waker: Arc<dyn Waker>) -> TestRouter {
        let log = Arc::new(MemLog::default());
        let router = Router::new(cfg, waker, log.clone());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        router.serve_http(l);
        TestRouter { router, addr, log }
    }

    pub fn simple() -> TestRouter {
        TestRouter::start(RouterConfig::default(), Arc::new(NoWaker))
    }

    pub fn route(&self, app: &str, hosts: &[&str], backends: Vec<Backend>) {
        let mut t = RouteTable::default();
        t.add(Route {
            app: app.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            backends,
            https_redirect: false,
        });
        self.router.set_routes(t);
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.router.shutdown();
    }
}

/// This process's resident memory in KiB.
pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs test `name` alone in a child test process; true when this already is that child.
pub fn isolated(name: &str) -> bool {
    if std::env::var_os("GEARSHIFT_ROUTER_ISOLATED").is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("GEARSHIFT_ROUTER_ISOLATED", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("1 passed"),
        "isolated run of {name} failed"
    );
    false
}
