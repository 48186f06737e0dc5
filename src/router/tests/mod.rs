//! The router against real sockets and real backends on 127.0.0.1.

mod support;
mod tls;

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use support::*;

#[test]
fn routes_by_host_with_aliases_case_and_port() {
    let (a, b) = (TestBackend::named("shop"), TestBackend::named("blog"));
    let r = TestRouter::simple();
    let mut t = RouteTable::default();
    t.add(Route {
        app: "shop".into(),
        hosts: vec!["shop.localhost".into(), "www.shop.test".into()],
        backends: vec![a.backend("g1")],
        https_redirect: false,
    });
    t.add(Route {
        app: "blog".into(),
        hosts: vec!["blog.localhost".into()],
        backends: vec![b.backend("g2")],
        https_redirect: false,
    });
    r.router.set_routes(t);
    assert_eq!(get(r.addr, "shop.localhost", "/").text(), "shop");
    assert_eq!(get(r.addr, "WWW.Shop.Test:8080", "/").text(), "shop");
    assert_eq!(get(r.addr, "blog.localhost.", "/").text(), "blog");
    let nf = get(r.addr, "nope.localhost", "/");
    assert_eq!(nf.status, 404);
    assert!(nf.header("content-type").unwrap().starts_with("text/html"));
    assert!(nf.text().contains("404 Not Found") && nf.text().contains("nope.localhost"));
    // The access log got a line per request, by app.
    std::thread::sleep(Duration::from_millis(50));
    let log = r.log.0.lock().unwrap();
    assert_eq!(log.iter().filter(|(app, _)| app == "shop").count(), 2);
    assert!(log
        .iter()
        .any(|(app, l)| app.is_empty() && l.contains("\"GET / HTTP/1.1\" 404")));
}

#[test]
fn bad_gateway_when_backend_is_down_and_service_unavailable_when_wake_times_out() {
    let mut dead = TestBackend::named("x");
    dead.kill();
    struct SlowWaker;
    impl Waker for SlowWaker {
        fn wake(&self, app: &str, deadline: Instant) -> WakeResult {
            if app == "stopped" {
                return WakeResult::NotRunning;
            }
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            WakeResult::TimedOut
        }
    }
    let cfg = RouterConfig {
        wake_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    };
    let r = TestRouter::start(cfg, Arc::new(SlowWaker));
    let mut t = RouteTable::default();
    t.add(Route {
        app: "down".into(),
        hosts: vec!["down.localhost".into()],
        backends: vec![dead.backend("g")],
        ..Route::default()
    });
    t.add(Route {
        app: "idle".into(),
        hosts: vec!["idle.localhost".into()],
        ..Route::default()
    });
    t.add(Route {
        app: "stopped".into(),
        hosts: vec!["stopped.localhost".into()],
        ..Route::default()
    });
    r.router.set_routes(t);
    let resp = get(r.addr, "down.localhost", "/");
    assert_eq!(resp.status, 502);
    assert!(resp.text().contains("not answering"));
    let t0 = Instant::now();
    let resp = get(r.addr, "idle.localhost", "/");
    assert_eq!(resp.status, 503);
    assert!(t0.elapsed() >= Duration::from_millis(290));
    assert_eq!(get(r.addr, "stopped.localhost", "/").status, 502);
    assert!(r.router.stats().upstream_connect_errors >= 1);
}

#[test]
fn idle_app_request_is_held_until_wake_returns_a_backend() {
    let app = Arc::new(TestBackend::named("awake"));
    struct StartWaker(Arc<TestBackend>, AtomicUsize);
    impl Waker for StartWaker {
        fn wake(&self, _app: &str, _deadline: Instant) -> WakeResult {
            self.1.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            WakeResult::Ready(vec![self.0.backend("g")])
        }
    }
    let waker = Arc::new(StartWaker(app.clone(), AtomicUsize::new(0)));
    let r = TestRouter::start(RouterConfig::default(), waker.clone());
    r.route("sleepy", &["sleepy.localhost"], vec![]);
    let addr = r.addr;
    let clients: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || get(addr, "sleepy.localhost", "/")))
        .collect();
    for c in clients {
        let resp = c.join().unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (200, "awake"));
    }
    assert_eq!(waker.1.load(Ordering::SeqCst), 1, "concurrent requests share one wake");
}

#[test]
fn keep_alive_on_both_sides_reuses_upstream_connections() {
    let b = TestBackend::named("ok");
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut c = Client::connect(r.addr);
    for _ in 0..100 {
        let resp = c.get("app.localhost", "/");
        assert_eq!(resp.status, 200);
        assert!(resp.header("connection").is_none());
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 100);
    assert!(
        b.accepts.load(Ordering::SeqCst) <= 2,
        "accepts: {}",
        b.accepts.load(Ordering::SeqCst)
    );
    // A second client after the first one left reuses the pooled connection.
    drop(c);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(get(r.addr, "app.localhost", "/").status, 200);
    assert!(b.accepts.load(Ordering::SeqCst) <= 2);
    assert_eq!(r.router.stats().connections_total, 2);
}

#[test]
fn stale_pooled_connection_is_retried_on_a_fresh_one() {
    // The backend closes every connection after one response, without saying so.
    let b = TestBackend::start(Arc::new(|_r: &SeenRequest, s: &mut TcpStream| {
        respond(s, 200, &[], b"once");
        false
    }));
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut c = Client::connect(r.addr);
    for i in 0..20 {
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let resp = c.get("app.localhost", "/");
        assert_eq!((resp.status, resp.text().as_str()), (200, "once"), "request {i}");
    }
    // A POST (not replayable) is never sent on a pooled connection the backend has closed.
    std::thread::sleep(Duration::from_millis(20));
    let body = "x=1";
    c.send(
        format!(
            "POST /p HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response(false).status, 200);
}

#[test]
fn forwarded_headers_and_hop_by_hop_filtering() {
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let b = TestBackend::start(Arc::new(move |r: &SeenRequest, s: &mut TcpStream| {
        *s2.lock().unwrap() = Some(r.clone());
        respond(
            s,
            200,
            &[
                ("Keep-Alive", "timeout=5"),
                ("Connection", "x-secret"),
                ("X-Secret", "1"),
            ],
            b"ok",
        )
    }));
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut c = Client::connect(r.addr);
    c.send(
        b"GET /a?b=1 HTTP/1.1\r\nHost: App.localhost:8000\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
          X-Real-IP: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\nX-Forwarded-Host: evil.example\r\n\
          Connection: keep-alive, x-drop\r\nX-Drop: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nProxy-Authorization: x\r\n\
          X-Keep: yes\r\n\r\n",
    );
    let resp = c.read_response(false);
    assert_eq!(resp.status, 200);
    assert!(resp.header("keep-alive").is_none() && resp.header("x-secret").is_none());
    let req = seen.lock().unwrap().clone().unwrap();
    assert_eq!(req.path, "/a?b=1");
    assert_eq!(req.header("host"), Some("App.localhost:8000"), "original Host kept");
    // A client's forwarded headers are its own claims: the backend sees the real peer only.
    assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(req.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(req.header("x-forwarded-proto"), Some("http"));
    assert_eq!(req.header("x-forwarded-host"), Some("App.localhost:8000"));
    assert_eq!(
        req.header("forwarded"),
        Some("for=127.0.0.1;proto=http;host=\"App.localhost:8000\"")
    );
    for h in [
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "x-forwarded-proto",
        "x-forwarded-host",
    ] {
        assert_eq!(
            req.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(h)).count(),
            1,
            "{h}"
        );
    }
    let rid = req.header("x-request-id").unwrap();
    assert!(rid.len() == 32 && rid.bytes().all(|b| b.is_ascii_hexdigit()), "{rid}");
    assert_eq!(req.header("x-keep"), Some("yes"));
    for h in ["x-drop", "keep-alive", "te", "proxy-authorization", "connection"] {
        assert!(req.header(h).is_none(), "{h} must not reach the backend");
    }
    // A client's own request id is replaced (it could forge another request's log lines).
    c.send(b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Request-Id: abc-123\r\n\r\n");
    c.read_response(false);
    let rid = seen
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .header("x-request-id")
        .unwrap()
        .to_string();
    assert!(rid != "abc-123" && rid.len() == 32, "{rid}");
    // The line is logged just after the response is sent, with the router's id.
    assert!(eventually(|| r
        .log
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|(_, l)| l.contains(&format!("rid={rid}")) && l.contains(" 200 "))));
    // Query strings (tokens, reset links) stay out of the access log.
    let log = r.log.0.lock().unwrap().clone();
    assert!(
        log.iter().any(|(_, l)| l.contains("\"GET /a?[query] HTTP/1.1\" 200")),
        "{log:?}"
    );
    assert!(!log.iter().any(|(_, l)| l.contains("b=1")), "{log:?}");
}

/// Behind a load balancer (`trusted_proxies`), its forwarded headers and request id are kept
/// and the peer appended; the client is the rightmost untrusted hop.
#[test]
fn a_trusted_proxys_forwarded_headers_are_kept() {
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let b = TestBackend::start(Arc::new(move |r: &SeenRequest, s: &mut TcpStream| {
        *s2.lock().unwrap() = Some(r.clone());
        respond(s, 200, &[], b"ok")
    }));
    let cfg = RouterConfig {
        trusted_proxies: TrustedProxies::parse(&["127.0.0.0/8"]).unwrap(),
        ..RouterConfig::default()
    };
    let r = TestRouter::start(cfg, Arc::new(NoWaker));
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut c = Client::connect(r.addr);
    c.send(
        b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Forwarded-For: 1.1.1.1, 203.0.113.9\r\n\
          X-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9;proto=https\r\nX-Request-Id: lb-42\r\n\r\n",
    );
    assert_eq!(c.read_response(false).status, 200);
    let req = seen.lock().unwrap().clone().unwrap();
    assert_eq!(req.header("x-forwarded-for"), Some("1.1.1.1, 203.0.113.9, 127.0.0.1"));
    assert_eq!(req.header("x-real-ip"), Some("203.0.113.9"));
    assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        req.header("forwarded"),
        Some("for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=\"app.localhost\"")
    );
    assert_eq!(req.header("x-request-id"), Some("lb-42"));
}

#[test]
fn round_robin_and_a_dead_backend_is_skipped_without_failures() {
    let mut bs: Vec<_> = ["a", "b", "c"].into_iter().map(TestBackend::named).collect();
    let r = TestRouter::simple();
    r.route(
        "app",
        &["app.localhost"],
        bs.iter().enumerate().map(|(i, b)| b.backend(&i.to_string())).collect(),
    );
    let mut c = Client::connect(r.addr);
    let mut counts = HashMap::new();
    for _ in 0..30 {
        *counts.entry(c.get("app.localhost", "/").text()).or_insert(0) += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
    bs[1].kill();
    // Its pooled connections die with it (the test backend's threads end when the client side closes).
    let mut counts = HashMap::new();
    for _ in 0..30 {
        let resp = get(r.addr, "app.localhost", "/");
        assert_eq!(resp.status, 200);
        *counts.entry(resp.text()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("b"), None);
    assert_eq!(counts.values().sum::<i32>(), 30);
    assert!(counts["a"] >= 10 && counts["c"] >= 10, "{counts:?}");
}

#[test]
fn http10_client_gets_a_dechunked_close_delimited_body() {
    let b = TestBackend::start(Arc::new(|_r: &SeenRequest, s: &mut TcpStream| {
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            .is_ok()
    }));
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut c = Client::connect(r.addr);
    c.send(b"GET / HTTP/1.0\r\nHost: app.localhost\r\n\r\n");
    let resp = c.read_response(false);
    assert_eq!(resp.text(), "hello world");
    assert!(resp.header("transfer-encoding").is_none());
    // HTTP/1.1 clients get the chunked body as is, and keep-alive.
    let mut c = Client::connect(r.addr);
    let resp = c.get("app.localhost", "/");
    assert_eq!(
        (resp.header("transfer-encoding"), resp.text().as_str()),
        (Some("chunked"), "hello world")
    );
    assert_eq!(c.get("app.localhost", "/").status, 200);
    // HTTP/1.0 with keep-alive and a Content-Length response stays open.
    let b2 = TestBackend::named("ten");
    r.route("app", &["app.localhost"], vec![b2.backend("g")]);
    let mut c = Client::connect(r.addr);
    for _ in 0..2 {
        c.send(b"GET / HTTP/1.0\r\nHost: app.localhost\r\nConnection: keep-alive\r\n\r\n");
        let resp = c.read_response(false);
        assert_eq!(
            (resp.text().as_str(), resp.header("connection")),
            ("ten", Some("keep-alive"))
        );
    }
}

#[test]
fn close_delimited_backend_response_is_rechunked_for_keep_alive() {
    let b = TestBackend::start(Arc::new(|_r: &SeenRequest, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil close");
        false
    }));
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut c = Client::connect(r.addr);
    for _ in 0..3 {
        let resp = c.get("app.localhost", "/");
        assert_eq!(resp.text(), "until close");
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    }
}

#[test]
fn oversized_head_gets_431_and_smuggling_shapes_get_400() {
    let b = TestBackend::named("ok");
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut c = Client::connect(r.addr);
    let big = "a".repeat(20 * 1024);
    c.send(format!("GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert_eq!(c.read_response(false).status, 431);
    let mut c = Client::connect(r.addr);
    c.send(
        b"POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(c.read_response(false).status, 400);
    assert_eq!(b.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn upgrade_is_tunnelled_and_survives_idle() {
    let b = TestBackend::start(Arc::new(|r: &SeenRequest, s: &mut TcpStream| {
        assert_eq!(r.header("upgrade"), Some("websocket"));
        assert_eq!(r.header("connection"), Some("Upgrade"));
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .is_ok()
    }));
    let cfg = RouterConfig {
        idle_timeout: Duration::from_secs(1),
        ..RouterConfig::default()
    };
    let r = TestRouter::start(cfg, Arc::new(NoWaker));
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut c = Client::connect(r.addr);
    c.send(b"GET /ws HTTP/1.1\r\nHost: app.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly");
    let resp = c.read_response(true);
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("upgrade"), Some("websocket"));
    let mut got = [0u8; 5];
    c.r.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early");
    c.send(b"ping");
    let mut got = [0u8; 4];
    c.r.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    // Idle for longer than every router timeout in this config.
    std::thread::sleep(Duration::from_secs(3));
    c.send(b"still here");
    let mut got = [0u8; 10];
    c.r.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here");
}

#[test]
fn server_sent_events_arrive_spaced_as_sent() {
    let b = TestBackend::start(Arc::new(|_r: &SeenRequest, s: &mut TcpStream| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for i in 0..5 {
            let ev = format!("data: {i}\n\n");
            s.write_all(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        s.write_all(b"0\r\n\r\n").is_ok()
    }));
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut s = TcpStream::connect(r.addr).unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    let mut stamps = Vec::new();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while !all.ends_with(b"0\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        all.extend_from_slice(&buf[..n]);
        let events = String::from_utf8_lossy(&all).matches("data: ").count();
        while stamps.len() < events {
            stamps.push(t0.elapsed());
        }
    }
    assert_eq!(stamps.len(), 5);
    for w in stamps.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(120), "events bunched: {stamps:?}");
    }
}

#[test]
fn large_bodies_stream_both_ways_with_flat_memory() {
    // RSS is per process: measured in a process of its own, away from the other tests' threads.
    if !isolated("router::tests::large_bodies_stream_both_ways_with_flat_memory") {
        return;
    }
    const SIZE: u64 = 64 * 1024 * 1024;
    let b = TestBackend::start(Arc::new(|r: &SeenRequest, s: &mut TcpStream| {
        if r.method == "POST" {
            return respond(s, 200, &[], r.body_len.to_string().as_bytes());
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let chunk = vec![b'd'; 64 * 1024];
        let mut left = SIZE;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            s.write_all(format!("{n:x}\r\n").as_bytes()).unwrap();
            s.write_all(&chunk[..n]).unwrap();
            s.write_all(b"\r\n").unwrap();
            left -= n as u64;
        }
        s.write_all(b"0\r\n\r\n").is_ok()
    }));
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let before = rss_kib();
    let mut peak = before;
    // Upload, chunked.
    let mut c = Client::connect(r.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = vec![b'u'; 256 * 1024];
    let mut sent = 0;
    while sent < SIZE {
        c.send(format!("{:x}\r\n", chunk.len()).as_bytes());
        c.send(&chunk);
        c.send(b"\r\n");
        sent += chunk.len() as u64;
        peak = peak.max(rss_kib());
    }
    c.send(b"0\r\n\r\n");
    let resp = c.read_response(false);
    assert_eq!(resp.text(), SIZE.to_string());
    // Download, chunked, on the same connection: counted, not kept.
    c.send(b"GET /down HTTP/1.1\r\nHost: app.localhost\r\n\r\n");
    let head = c.read_response(true);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let mut sc = http::ChunkScanner::default();
    let mut got = 0u64;
    let mut reads = 0u64;
    while !sc.done() {
        let buf = std::io::BufRead::fill_buf(&mut c.r).unwrap();
        assert!(!buf.is_empty());
        let k = sc.scan(buf, |d| got += d.len() as u64).unwrap();
        std::io::BufRead::consume(&mut c.r, k);
        reads += 1;
        if reads.is_multiple_of(64) {
            peak = peak.max(rss_kib());
        }
    }
    assert_eq!(got, SIZE);
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    eprintln!("RSS before {before} KiB, peak {peak} KiB, growth {growth_mib} MiB for 2 x 64 MiB");
    assert!(growth_mib < 16, "memory grew by {growth_mib} MiB");
}

#[test]
fn slowloris_connections_do_not_block_normal_requests() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let b = TestBackend::named("ok");
    let cfg = RouterConfig {
        header_timeout: Duration::from_secs(2),
        ..RouterConfig::default()
    };
    let r = TestRouter::start(cfg, Arc::new(NoWaker));
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let addr = r.addr;
    let slow: Vec<_> = (0..200)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let t0 = Instant::now();
                for byte in b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Slow: 1234567890\r\n\r\n" {
                    if s.write_all(&[*byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    if t0.elapsed() > Duration::from_secs(6) {
                        break;
                    }
                }
                // The router cut us off: 408, then EOF.
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut resp = Vec::new();
                let _ = s.read_to_end(&mut resp);
                (t0.elapsed(), String::from_utf8_lossy(&resp).into_owned())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let normal: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let t = Instant::now();
                let resp = get(addr, "app.localhost", "/");
                (resp.status, t.elapsed())
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for n in normal {
        let (status, took) = n.join().unwrap();
        assert_eq!(status, 200);
        worst = worst.max(took);
    }
    assert!(worst < Duration::from_secs(1), "slowest normal request took {worst:?}");
    eprintln!(
        "50 normal requests beside 200 slowloris connections: all in {:?}, slowest {worst:?}",
        t0.elapsed()
    );
    for s in slow {
        let (took, resp) = s.join().unwrap();
        assert!(took < Duration::from_secs(5), "a slowloris connection lived {took:?}");
        assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    }
}

#[test]
fn connection_cap_refuses_new_connections_quickly() {
    let b = TestBackend::named("ok");
    let cfg = RouterConfig {
        max_connections: 3,
        ..RouterConfig::default()
    };
    let r = TestRouter::start(cfg, Arc::new(NoWaker));
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let held: Vec<_> = (0..3).map(|_| Client::connect(r.addr)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = Client::connect(r.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n");
    assert_eq!(c.read_response(false).status, 503);
    assert_eq!(r.router.stats().rejected_connections, 1);
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(get(r.addr, "app.localhost", "/").status, 200);
}

#[test]
fn metrics_on_a_loopback_admin_listener() {
    let b = TestBackend::named("ok");
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    get(r.addr, "app.localhost", "/");
    get(r.addr, "unknown.localhost", "/");
    // Requests are counted just after their response is sent.
    std::thread::sleep(Duration::from_millis(50));
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    r.router.serve_admin(admin, Default::default(), None, None).unwrap();
    let m = get(admin_addr, "localhost", "/metrics").text();
    assert!(
        m.contains("gearshift_router_requests_total{app=\"app\",class=\"2xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("gearshift_router_requests_total{app=\"\",class=\"4xx\"} 1"),
        "{m}"
    );
    assert!(m.contains("gearshift_router_active_connections "));
    assert!(m.contains("gearshift_router_response_bytes_total{app=\"app\"}"));
    // Break 9 of issue 14: any local user could read them (apps, gears). Only root can now.
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{admin_addr}/metrics"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.ends_with("\n403") && out.contains("read them as root"), "{out}");
    assert!(!out.contains("app=\"app\""), "{out}");
    let public = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    assert!(
        m.contains("gearshift_router_request_duration_seconds_bucket{app=\"app\",le=\"+Inf\"} 1"),
        "{m}"
    );
    assert!(r.router.serve_admin(public, Default::default(), None, None).is_err());
}

#[test]
fn route_switch_is_atomic_and_keeps_serving() {
    let (v1, v2) = (TestBackend::named("v1"), TestBackend::named("v2"));
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![v1.backend("d1")]);
    let mut c = Client::connect(r.addr);
    assert_eq!(c.get("app.localhost", "/").text(), "v1");
    r.route("app", &["app.localhost"], vec![v2.backend("d2")]);
    assert_eq!(c.get("app.localhost", "/").text(), "v2");
}

/// Not a test: the router process for scripts/bench-router.sh (a release build), configured by env.
#[test]
#[ignore = "run by scripts/bench-router.sh"]
fn bench_serve() {
    if std::env::var_os("ROUTER_BENCH_LISTEN").is_none() {
        eprintln!("bench_serve: run by scripts/bench-router.sh, which sets ROUTER_BENCH_*");
        return;
    }
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let listen: std::net::SocketAddr = env("ROUTER_BENCH_LISTEN").parse().unwrap();
    let backend: std::net::SocketAddr = env("ROUTER_BENCH_BACKEND").parse().unwrap();
    let secs: u64 = env("ROUTER_BENCH_SECONDS").parse().unwrap();
    std::fs::write(env("ROUTER_BENCH_PIDFILE"), std::process::id().to_string()).unwrap();
    // The access log is formatted as in production; the sink discards it.
    struct Discard;
    impl AccessLog for Discard {
        fn log(&self, _app: &str, line: &str) {
            std::hint::black_box(line);
        }
    }
    // Every bench client comes from 127.0.0.1, and the idle-connection round opens 1000: the
    // per-IP cap is raised (still checked on every accept), the per-app cap is the default.
    let cfg = RouterConfig {
        max_connections_per_ip: 100_000,
        ..RouterConfig::default()
    };
    let router = Router::new(cfg, Arc::new(NoWaker), Arc::new(Discard));
    let mut t = RouteTable::default();
    t.add(Route {
        app: "bench".into(),
        hosts: vec!["bench.localhost".into()],
        backends: vec![Backend {
            addr: backend,
            id: "nginx".into(),
        }],
        https_redirect: false,
    });
    router.set_routes(t);
    router.serve_http(std::net::TcpListener::bind(listen).unwrap());
    std::thread::sleep(Duration::from_secs(secs));
}

#[test]
fn switching_deployments_drains_the_old_backend() {
    let slow = TestBackend::start(Arc::new(|r: &SeenRequest, s: &mut TcpStream| {
        if r.path == "/slow" {
            std::thread::sleep(Duration::from_millis(600));
        }
        respond(s, 200, &[], b"v1")
    }));
    let v2 = TestBackend::named("v2");
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![slow.backend("d1")]);
    let mut kept = Client::connect(r.addr);
    assert_eq!(kept.get("app.localhost", "/").text(), "v1");
    let addr = r.addr;
    let in_flight = std::thread::spawn(move || get(addr, "app.localhost", "/slow").text());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(r.router.in_flight(slow.addr), 1);
    r.route("app", &["app.localhost"], vec![v2.backend("d2")]);
    assert_eq!(r.router.in_flight(slow.addr), 1, "still counted after the switch");
    assert_eq!(kept.get("app.localhost", "/").text(), "v2");
    assert_eq!(
        in_flight.join().unwrap(),
        "v1",
        "the in-flight request finished on the old deployment"
    );
    // The client may read the last byte a moment before the proxy thread drops its count.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while r.router.in_flight(slow.addr) != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        r.router.in_flight(slow.addr),
        0,
        "the finished request is no longer in flight"
    );
}

#[test]
fn idle_client_connections_return_their_upstreams_to_the_pool() {
    let b = TestBackend::named("ok");
    let r = TestRouter::simple();
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut idle = Client::connect(r.addr);
    assert_eq!(idle.get("app.localhost", "/").status, 200);
    std::thread::sleep(Duration::from_millis(2300));
    // The idle client gave its upstream connection back: a new client reuses it.
    assert_eq!(get(r.addr, "app.localhost", "/").status, 200);
    assert_eq!(b.accepts.load(Ordering::SeqCst), 1);
    assert_eq!(
        idle.get("app.localhost", "/").status,
        200,
        "the idle client is still served"
    );
}

/// Polls `event` for up to 5 s; whether it held.
fn eventually(mut event: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if event() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Break 8 of issue 14: one client could hold thousands of connections. Over
/// `max_connections_per_ip`, its new connections get a 503; a closed one frees a slot.
#[test]
fn one_client_is_capped_at_max_connections_per_ip() {
    let b = TestBackend::named("ok");
    let cfg = RouterConfig {
        max_connections_per_ip: 3,
        ..RouterConfig::default()
    };
    let r = TestRouter::start(cfg, Arc::new(NoWaker));
    r.route("app", &["app.localhost"], vec![b.backend("g")]);
    let mut held: Vec<_> = (0..3).map(|_| Client::connect(r.addr)).collect();
    for c in &mut held {
        assert_eq!(c.get("app.localhost", "/").status, 200);
    }
    let mut extra = TcpStream::connect(r.addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert_eq!(r.router.stats().rejected_connections, 1);
    // The held connections still work; closing one lets a new one in.
    assert_eq!(held[0].get("app.localhost", "/").status, 200);
    held.pop();
    assert!(eventually(
        || Client::connect(r.addr).get("app.localhost", "/").status == 200
    ));
}

/// Break 8 of issue 14: requests to a never-answering app held router threads without limit.
/// Over `max_connections_per_app` its requests get a 503, and the other apps keep answering.
#[test]
fn a_never_answering_app_is_capped_and_others_keep_answering() {
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r2 = release.clone();
    let hang = TestBackend::start(Arc::new(move |_r: &SeenRequest, s: &mut TcpStream| {
        let t = Instant::now();
        while !r2.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        respond(s, 200, &[], b"late")
    }));
    let other = TestBackend::named("other");
    let cfg = RouterConfig {
        max_connections_per_app: 2,
        ..RouterConfig::default()
    };
    let r = TestRouter::start(cfg, Arc::new(NoWaker));
    let mut t = RouteTable::default();
    for (app, b) in [("slow", &hang), ("other", &other)] {
        t.add(Route {
            app: app.into(),
            hosts: vec![format!("{app}.localhost")],
            backends: vec![b.backend("g")],
            ..Route::default()
        });
    }
    r.router.set_routes(t);
    let mut waiting: Vec<_> = (0..2).map(|_| Client::connect(r.addr)).collect();
    for c in &mut waiting {
        c.send(b"GET / HTTP/1.1\r\nHost: slow.localhost\r\n\r\n");
    }
    assert!(eventually(|| hang.requests.load(Ordering::SeqCst) == 2));
    let over = get(r.addr, "slow.localhost", "/");
    assert_eq!(over.status, 503);
    assert_eq!(get(r.addr, "other.localhost", "/").text(), "other");
    release.store(true, Ordering::SeqCst);
    for c in &mut waiting {
        assert_eq!(c.read_response(false).text(), "late");
    }
    // Answered requests free their slots.
    assert_eq!(get(r.addr, "slow.localhost", "/").text(), "late");
    let mut registry = prometheus_client::registry::Registry::default();
    let inner = std::sync::Arc::downgrade(&r.router.inner);
    registry.register_collector(Box::new(super::admin::RouterCollector(inner)));
    assert!(super::admin::encode(&registry).contains("gearshift_router_rejected_app_requests_total 1"));
}
