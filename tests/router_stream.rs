//! Streams through the daemon's router, end to end (a real `git push`, real clients): 1 GiB up
//! and down with the daemon's memory flat, server-sent events arriving as sent, a WebSocket
//! that survives two idle minutes, slowloris connections that do not starve normal requests,
//! per-app health paths that gate deployments, and certificates installed while the daemon
//! runs.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The period of the byte pattern both sides stream (a prime, so a lost, repeated or
/// reordered block shows up as a mismatch).
const P: usize = 65521;

/// The test app: `/upload` checks and counts a streamed body, `/download/N` streams N bytes,
/// `/events` sends 5 server-sent events 300 ms apart, `/ws` echoes WebSocket frames, `/healthz`
/// answers with the code in health.txt, and `/` with page.txt. Python stdlib only.
const APP: &str = r#"import http.server, os, hashlib, base64, time, struct
P = 65521
PAT = bytes(((i * 2654435761) >> 13) & 255 for i in range(P))
PAT2 = PAT + PAT
BLOCK = PAT * 16
def text(name, default):
    try:
        return open(name).read().strip()
    except OSError:
        return default
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def reply(self, code, body):
        b = body.encode()
        self.send_response(code); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def do_POST(self):
        left = int(self.headers['Content-Length']); got = 0; bad = 0
        while left > 0:
            b = self.rfile.read(min(left, P))
            if not b: break
            o = got % P
            if b != PAT2[o:o + len(b)]: bad += 1
            got += len(b); left -= len(b)
        self.reply(200, f'{got} {bad}')
    def do_GET(self):
        if self.path.startswith('/download/'):
            n = int(self.path.rsplit('/', 1)[1])
            self.send_response(200); self.send_header('Content-Length', str(n)); self.end_headers()
            while n > 0:
                k = min(n, len(BLOCK)); self.wfile.write(BLOCK if k == len(BLOCK) else BLOCK[:k]); n -= k
        elif self.path == '/events':
            self.send_response(200); self.send_header('Content-Type', 'text/event-stream')
            self.send_header('Cache-Control', 'no-cache'); self.send_header('Transfer-Encoding', 'chunked'); self.end_headers()
            for i in range(5):
                if i: time.sleep(0.3)
                e = f'id: {i}\ndata: tick {i} {time.time():.6f}\n\n'.encode()
                self.wfile.write(b'%x\r\n%s\r\n' % (len(e), e))
            self.wfile.write(b'0\r\n\r\n')
        elif self.path == '/ws':
            acc = base64.b64encode(hashlib.sha1((self.headers['Sec-WebSocket-Key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()).decode()
            self.send_response(101); self.send_header('Upgrade', 'websocket'); self.send_header('Connection', 'Upgrade')
            self.send_header('Sec-WebSocket-Accept', acc); self.end_headers()
            self.close_connection = True
            while True:
                h = self.rfile.read(2)
                if len(h) < 2: return
                op, n = h[0] & 15, h[1] & 127
                if n == 126: n = struct.unpack('>H', self.rfile.read(2))[0]
                elif n == 127: n = struct.unpack('>Q', self.rfile.read(8))[0]
                mask = self.rfile.read(4) if h[1] & 128 else b'\0\0\0\0'
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
                if op == 8:
                    self.wfile.write(b'\x88\x00'); return
                self.wfile.write((bytes([0x80 | op, n]) if n < 126 else bytes([0x80 | op, 126]) + struct.pack('>H', n)) + data)
        elif self.path == '/healthz':
            self.reply(int(text('health.txt', '200')), 'health')
        else:
            self.reply(200, text('page.txt', 'stream-app'))
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#;

/// The pattern the app streams, twice over (so any window of up to P bytes is one slice).
fn pattern2() -> Vec<u8> {
    let p: Vec<u8> = (0..P as u64).map(|i| ((i * 2654435761) >> 13) as u8).collect();
    [p.clone(), p].concat()
}

/// Commits the app's files (health.txt holds the code /healthz answers) and pushes:
/// (push succeeded, output).
fn commit_and_push(x: &DevNode, dir: &Path, app: &str, page: &str, health: u16) -> (bool, String) {
    std::fs::write(dir.join("page.txt"), page).unwrap();
    std::fs::write(dir.join("health.txt"), health.to_string()).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", page]);
    push_as(&x.n, &x.key, dir, app, "main")
}

/// Creates APP owned by dev (on a profile without the default bandwidth cap, so a GiB moves in
/// seconds) with the test app's source; returns the repository, not yet pushed.
fn app_source(x: &DevNode, app: &str) -> PathBuf {
    if !std::fs::read_to_string(&x.n.config)
        .unwrap()
        .contains("[profiles.fast]")
    {
        x.n.add_profile("fast", "512M", 1.0, 512, "1G", "20gbit");
    }
    x.n.ok(&[
        "app",
        "create",
        app,
        "--cartridge",
        "python",
        "--owner",
        "dev",
        "--profile",
        "fast",
    ]);
    let dir = x.n.root.join("src").join(app);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Procfile"), "web: python3 -u server.py\n").unwrap();
    std::fs::write(dir.join("server.py"), APP).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    dir
}

/// Creates and deploys APP, and waits until the router serves it.
fn deploy(x: &DevNode, app: &str) -> PathBuf {
    let dir = app_source(x, app);
    let (ok, out) = commit_and_push(x, &dir, app, "v1", 200);
    assert!(ok, "push: {out}");
    wait_for(&x.n, &format!("{app}.localhost"), "v1");
    dir
}

/// A plain request through the router; returns (status, body, time taken).
/// A TCP connection to 127.0.0.1:`port` from the loopback address `src`.
fn connect_from(src: [u8; 4], port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket(2) with constant arguments; the fd is owned by the TcpStream below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is ours and open; the TcpStream closes it when dropped.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (from, to) = (addr(src, 0), addr([127, 0, 0, 1], port));
    // SAFETY: bind/connect read `len` bytes of a live sockaddr_in.
    let bound = unsafe { libc::bind(fd, &from as *const _ as *const libc::sockaddr, len) };
    assert_eq!(bound, 0, "bind to {src:?}: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let connected = unsafe { libc::connect(fd, &to as *const _ as *const libc::sockaddr, len) };
    assert_eq!(
        connected,
        0,
        "connect from {src:?}: {}",
        std::io::Error::last_os_error()
    );
    stream
}

fn request(n: &TestNode, host: &str, path: &str) -> (u16, String, Duration) {
    let t = Instant::now();
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", n.http_port())) else {
        return (0, String::new(), t.elapsed());
    };
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body, t.elapsed())
}

fn wait_for(n: &TestNode, host: &str, want: &str) {
    let t = Instant::now();
    loop {
        let (code, body, _) = request(n, host, "/");
        if code == 200 && body == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{host} never answered {want:?} (last: {code} {body})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a request head and reads the response head: (status, headers lower-cased, reader
/// positioned at the body).
fn exchange(n: &TestNode, head: &str) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(("127.0.0.1", n.http_port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    read_head(BufReader::with_capacity(1 << 20, s))
}

fn read_head(mut r: BufReader<TcpStream>) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let code = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (code, headers, r)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Samples a process's resident memory every 50 ms until told to stop; returns the peak (bytes).
struct RssWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

fn rss(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: u64 = st
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kb * 1024
}

/// The process's resident high-water mark, as /proc shows it.
fn vm_hwm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        RssWatch { stop, thread }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn a_gib_up_and_down_through_the_router_with_flat_daemon_memory() {
    require_root!();
    let x = dev_node();
    let n = &x.n;
    deploy(&x, "big");
    let pid = x.daemon.pid();
    // Warm up the router's paths (threads, pools) with a small transfer each way first.
    let (code, _, mut r) = exchange(
        n,
        "GET /download/1000000 HTTP/1.1\r\nHost: big.localhost\r\nConnection: close\r\n\r\n",
    );
    let mut warm = Vec::new();
    r.read_to_end(&mut warm).unwrap();
    assert_eq!((code, warm.len()), (200, 1_000_000));
    let before = rss(pid);
    let hwm_before = vm_hwm(pid);
    let watch = RssWatch::start(pid);
    let pat2 = pattern2();

    // Upload: the body streams from a periodic buffer; the app checks every byte.
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", n.http_port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /upload HTTP/1.1\r\nHost: big.localhost\r\nContent-Length: {GIB}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let block = pat2[..P].repeat(16);
    let mut left = GIB as usize;
    while left > 0 {
        let k = left.min(block.len());
        s.write_all(&block[..k])
            .unwrap_or_else(|e| panic!("upload failed after {} bytes: {e}", GIB as usize - left));
        left -= k;
    }
    let (code, _, mut r) = read_head(BufReader::new(s));
    let mut answer = String::new();
    r.read_to_string(&mut answer).unwrap();
    let up = t.elapsed();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer, format!("{GIB} 0"), "the app got (bytes, mismatching blocks)");

    // Download: read in 1 MiB pieces and compare each with the pattern at its offset.
    let t = Instant::now();
    let (code, headers, mut r) = exchange(
        n,
        &format!("GET /download/{GIB} HTTP/1.1\r\nHost: big.localhost\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-length"), Some(GIB.to_string().as_str()));
    let mut buf = vec![0u8; MIB as usize];
    let (mut got, mut bad) = (0usize, 0u32);
    loop {
        let k = r.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "download failed after {got} bytes and {:.1?}: {e} (daemon log:\n{})",
                t.elapsed(),
                x.daemon.log_text()
            )
        });
        if k == 0 {
            break;
        }
        let mut i = 0;
        while i < k {
            let o = (got + i) % P;
            let m = (k - i).min(P);
            if buf[i..i + m] != pat2[o..o + m] {
                bad += 1;
            }
            i += m;
        }
        got += k;
    }
    let down = t.elapsed();
    let peak = watch.peak();
    let hwm = vm_hwm(pid);
    eprintln!(
        "1 GiB up in {up:.2?} ({:.0} MiB/s), down in {down:.2?} ({:.0} MiB/s); daemon RSS {:.1} MiB before, peak {:.1} MiB during (VmHWM {hwm_before} before, {hwm} after)",
        1024.0 / up.as_secs_f64(),
        1024.0 / down.as_secs_f64(),
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    assert_eq!(got as u64, GIB, "download size");
    assert_eq!(bad, 0, "{bad} downloaded blocks differ from what the app sent");
    assert!(
        peak < before + 64 * MIB,
        "the daemon grew from {before} to {peak} bytes while moving 2 GiB: it buffers bodies"
    );
}

#[test]
fn server_sent_events_arrive_as_they_are_sent() {
    require_root!();
    let x = dev_node();
    deploy(&x, "sse");
    let (code, headers, mut r) = exchange(
        &x.n,
        "GET /events HTTP/1.1\r\nHost: sse.localhost\r\nAccept: text/event-stream\r\n\r\n",
    );
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-type"), Some("text/event-stream"));
    // Each event carries the app's send time; its arrival is recorded once it is complete.
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let (mut arrived, mut text) = (Vec::new(), String::new());
    let mut buf = [0u8; 4096];
    while arrived.len() < 5 {
        let k = r.read(&mut buf).unwrap();
        assert!(k > 0, "the stream ended after {} events: {text:?}", arrived.len());
        text.push_str(&String::from_utf8_lossy(&buf[..k]));
        let complete = text.matches("\n\n").count();
        arrived.resize(complete.max(arrived.len()), wall());
    }
    let sent: Vec<f64> = (0..5)
        .map(|i| {
            let start = format!("id: {i}\ndata: tick {i} ");
            let at = text.find(&start).unwrap_or_else(|| panic!("no event {i} in {text:?}")) + start.len();
            text[at..].split('\n').next().unwrap().parse().unwrap()
        })
        .collect();
    let ms = |v: Vec<f64>| v.iter().map(|s| (s * 1000.0).round() as i64).collect::<Vec<_>>();
    let delays = ms(arrived.iter().zip(&sent).map(|(a, s)| a - s).collect());
    let gaps = ms(arrived.windows(2).map(|w| w[1] - w[0]).collect());
    eprintln!("SSE events 300 ms apart: arrival gaps {gaps:?} ms, each arrived {delays:?} ms after it was sent");
    // Streamed, not buffered: every event arrives well before the next one is sent, and the
    // arrivals are spread out as the sends are (scheduling jitter on a busy machine allowed).
    assert!(
        delays.iter().all(|d| *d < 250),
        "events arrived {delays:?} ms after they were sent: the router holds them back"
    );
    assert!(
        gaps.iter().all(|g| *g >= 100) && gaps.iter().sum::<i64>() >= 1000,
        "events sent 300 ms apart arrived bunched together: gaps {gaps:?} ms"
    );
}

/// One masked client text frame.
fn ws_frame(text: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    assert!(text.len() < 126);
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend(mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one unmasked server frame: (opcode, payload).
fn ws_read(r: &mut BufReader<TcpStream>) -> (u8, String) {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).unwrap();
    assert_eq!(h[1] & 0x80, 0, "a server frame is masked");
    let len = (h[1] & 0x7f) as usize;
    assert!(len < 126);
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).unwrap();
    (h[0] & 0x0f, String::from_utf8(payload).unwrap())
}

#[test]
fn a_websocket_survives_two_idle_minutes() {
    require_root!();
    let x = dev_node();
    deploy(&x, "sock");
    let (code, headers, mut r) = exchange(
        &x.n,
        "GET /ws HTTP/1.1\r\nHost: sock.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(code, 101);
    // The RFC 6455 example key and its answer.
    assert_eq!(
        header(&headers, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    r.get_mut().write_all(&ws_frame("hello")).unwrap();
    assert_eq!(ws_read(&mut r), (1, "hello".to_string()));
    // Longer than every router timeout (60 s client idle, 30 s upstream idle).
    std::thread::sleep(Duration::from_secs(120));
    r.get_mut().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    r.get_mut().write_all(&ws_frame("still here")).unwrap();
    assert_eq!(ws_read(&mut r), (1, "still here".to_string()));
    r.get_mut().write_all(&[0x88, 0x80, 0, 0, 0, 0]).unwrap();
    assert_eq!(ws_read(&mut r).0, 8, "no close frame back");
}

#[test]
fn slowloris_connections_do_not_starve_normal_requests() {
    require_root!();
    let x = dev_node();
    let n = &x.n;
    deploy(&x, "busy");
    const SLOW: usize = 300;
    let head = b"GET / HTTP/1.1\r\nHost: busy.localhost\r\nX-Slow: 1\r\n\r\n";
    // The slow connections come from another address (127.0.0.2) than the normal requests
    // (127.0.0.1), as an attacker's would: the router's per-address cap
    // (`router.max_connections_per_ip`, 256) turns the ones past it away, and must never make
    // the other clients wait.
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| connect_from([127, 0, 0, 2], n.http_port())).collect();
    // One header byte per second on every slow connection, for 15 s, while normal requests
    // go on; each slow connection's fate is recorded.
    let port = n.http_port();
    let feeder = std::thread::spawn(move || {
        let t = Instant::now();
        let mut closed_at = vec![None; SLOW];
        for i in 0..15 {
            for (c, s) in slow.iter_mut().enumerate() {
                if closed_at[c].is_none() && s.write_all(&head[i..i + 1]).is_err() {
                    closed_at[c] = Some(t.elapsed());
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        (slow, closed_at)
    });
    let t = Instant::now();
    let mut latencies = Vec::new();
    while t.elapsed() < Duration::from_secs(12) {
        let (code, body, took) = request(n, "busy.localhost", "/");
        assert_eq!(
            (code, body.as_str()),
            (200, "v1"),
            "a normal request failed with {SLOW} slow connections open (port {port})"
        );
        latencies.push(took);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (slow, closed_at) = feeder.join().unwrap();
    latencies.sort();
    let worst = *latencies.last().unwrap();
    eprintln!(
        "{} normal requests beside {SLOW} slowloris connections: median {:.1?}, worst {worst:.1?}",
        latencies.len(),
        latencies[latencies.len() / 2]
    );
    assert!(
        worst < Duration::from_secs(2),
        "a normal request took {worst:?} beside slowloris connections"
    );
    // The router cuts a head that does not arrive within its header timeout (10 s): with a 408
    // page, or by closing.
    let cut = slow
        .iter()
        .zip(&closed_at)
        .filter(|(s, closed)| {
            if closed.is_some() {
                return true;
            }
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut out = Vec::new();
            match (&**s).read_to_end(&mut out) {
                Ok(_) => true,
                Err(e) => {
                    String::from_utf8_lossy(&out).contains(" 408 ")
                        || !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
                }
            }
        })
        .count();
    assert_eq!(
        cut, SLOW,
        "only {cut} of {SLOW} slowloris connections were cut after 15 s"
    );
}

#[test]
fn a_health_path_gates_deployments() {
    require_root!();
    let x = dev_node();
    let n = &x.n;
    let dir = app_source(&x, "care");
    // Set over SSH by the app's owner, like the other app commands.
    let o = n.ssh(&x.key, &[], Some("app health care /healthz --timeout 5"), b"");
    assert!(o.status.success(), "app health over SSH: {o:?}");
    let shown = n.ok(&["app", "health", "care"]);
    assert!(shown.contains("GET /healthz answers 2xx (within 5s)"), "{shown}");
    assert_eq!(n.show("care")["health_path"], "/healthz");
    let (ok, out) = commit_and_push(&x, &dir, "care", "v1", 200);
    assert!(ok, "a healthy first deployment was refused: {out}");
    wait_for(n, "care.localhost", "v1");
    // v2 listens and serves / but its health check answers 500: it never goes live.
    let t = Instant::now();
    let (ok, out) = commit_and_push(&x, &dir, "care", "v2", 500);
    eprintln!("unhealthy push refused after {:.1?}", t.elapsed());
    assert!(!ok, "a deployment whose /healthz answers 500 went through: {out}");
    assert!(out.contains("GET /healthz answered 500"), "{out}");
    assert!(out.contains("keeps serving"), "{out}");
    for _ in 0..10 {
        let (code, body, _) = request(n, "care.localhost", "/");
        assert_eq!((code, body.as_str()), (200, "v1"), "the old deployment stopped serving");
    }
    // Fixed: v3 goes live.
    let (ok, out) = commit_and_push(&x, &dir, "care", "v3", 204);
    assert!(ok, "a healthy deployment was refused: {out}");
    wait_for(n, "care.localhost", "v3");
    // Without the health path, an unhealthy version deploys again (ready = listening).
    assert!(n.ok(&["app", "health", "care", "--off"]).contains("no health path"));
    let (ok, out) = commit_and_push(&x, &dir, "care", "v4", 500);
    assert!(ok, "{out}");
    wait_for(n, "care.localhost", "v4");
    // A start (what a wake runs) waits for the same answer: unhealthy v4 does not count as started.
    n.ok(&["app", "health", "care", "/healthz", "--timeout", "2"]);
    n.ok(&["app", "idle", "care"]);
    let e = n.fails(&["app", "start", "care"]);
    assert!(e.contains("GET /healthz answered 500"), "{e}");
    assert!(n
        .fails(&["app", "health", "care", "healthz"])
        .contains("not a health path"));
}

/// `openssl x509 -fingerprint` of a PEM certificate file.
fn fingerprint_of(pem: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The fingerprint and subject of the certificate the router serves for SNI `host`.
fn served_cert(n: &TestNode, host: &str) -> (String, String) {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{} -servername {host} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 -subject",
            n.https_port()
        ))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines = out.lines();
    (
        lines.next().unwrap_or("").trim().to_string(),
        lines.next().unwrap_or("").trim().to_string(),
    )
}

#[test]
fn a_certificate_installed_while_the_daemon_runs_is_served() {
    require_root!();
    let x = dev_node();
    let n = &x.n;
    n.ok(&["app", "create", "vault", "--cartridge", "python", "--owner", "dev"]);
    n.ok(&["domain", "add", "vault", "secure.example"]);
    let dir = n.root.join("tls");
    // Before: the router's own self-signed certificate.
    let t = Instant::now();
    let before = loop {
        let (fp, _) = served_cert(n, "secure.example");
        if !fp.is_empty() {
            break fp;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no TLS handshake for secure.example"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Installs a new certificate with subject CN and waits until the router serves it.
    let install = |cn: &str| {
        let (cert, key) = make_cert(&dir, "secure.example", cn);
        let want = fingerprint_of(&cert);
        assert_ne!(want, before);
        let mut bundle = std::fs::read(&cert).unwrap();
        bundle.extend(std::fs::read(&key).unwrap());
        let mut c = n
            .cmd()
            .args(["domain", "cert", "vault", "secure.example"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(&bundle).unwrap();
        assert!(c.wait().unwrap().success(), "domain cert failed");
        let t = Instant::now();
        loop {
            let (fp, subject) = served_cert(n, "secure.example");
            if fp == want {
                assert!(subject.contains(cn), "{subject}");
                return (want, t.elapsed());
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the running daemon still serves {fp} ({subject}), not the installed {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (first, took) = install("first-cert");
    // A renewal replaces it the same way, and other names keep their own certificates.
    let (renewed, took2) = install("renewed-cert");
    eprintln!("installed certificate served after {took:.1?}, renewal after {took2:.1?}");
    let (other, _) = served_cert(n, "vault.localhost");
    assert!(!other.is_empty() && other != first && other != renewed);
}
