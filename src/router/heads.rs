//! Request and response heads: parse what the client or backend sent, and write the head to forward
//! (hop-by-hop headers dropped, the forwarded headers and `X-Request-Id` the router's own, framing
//! re-stated).

use super::forwarded::{self, TrustedProxies};
use super::http::{self, Framing, HeadFacts};
use super::shared::Inner;
use std::io::Write;

/// Most headers accepted in a request or response head.
const MAX_HEADERS: usize = 100;

/// Per-request text reused across requests (no allocation once warm).
#[derive(Default)]
pub struct Scratch {
    pub method: String,
    pub path: String,
    pub host: String,
    pub host_raw: String,
    pub rid: String,
    pub xff: String,
    /// A trusted proxy's `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`.
    pub xfp: String,
    pub xfh: String,
    pub fwd: String,
    pub upgrade: String,
    pub out: Vec<u8>,
    pub line: String,
}

/// What the proxy learned from a request head.
#[derive(Debug, Clone, Copy)]
pub struct Req {
    pub framing: Framing,
    pub minor: u8,
    pub keep_alive: bool,
    pub upgrade: bool,
    pub head: bool,
    pub idempotent: bool,
    pub expect_continue: bool,
    pub head_len: usize,
}

/// Parses a request head and writes the upstream request head into `s.out`. Err: the status to answer.
pub fn parse_request(head: &[u8], s: &mut Scratch, inner: &Inner, peer_ip: &str, tls: bool) -> Result<Req, u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        _ => return Err(400),
    };
    let minor = req.version.unwrap_or(1);
    let method = req.method.unwrap_or("GET");
    let path = req.path.unwrap_or("/");
    let headers = req.headers;
    let f = HeadFacts::scan(headers).map_err(|_| 400u16)?;
    let framing = http::request_framing(&f).map_err(|_| 400u16)?;
    s.method.clear();
    s.method.push_str(method);
    s.path.clear();
    s.path.push_str(path);
    s.host.clear();
    s.host_raw.clear();
    if let Some(i) = f.host {
        let raw = headers[i].value;
        if let Some(h) = http::normalize_host(raw) {
            s.host.push_str(&h);
        }
        s.host_raw.push_str(std::str::from_utf8(raw).unwrap_or("").trim());
    } else if minor == 1 {
        return Err(400);
    }
    let keep_alive = if minor == 1 {
        !f.conn_close
    } else {
        f.conn_keep_alive && !f.conn_close
    };
    let upgrade = f.conn_upgrade && f.upgrade.is_some();
    s.upgrade.clear();
    if let Some(i) = f.upgrade.filter(|_| upgrade) {
        s.upgrade
            .push_str(std::str::from_utf8(headers[i].value).unwrap_or("").trim());
    }
    // Only a trusted proxy's request id is kept: a client's could forge another request's log lines.
    let trusted = inner.cfg.trusted_proxies.trusts(peer_ip);
    s.rid.clear();
    let proxy_rid = f
        .request_id
        .filter(|_| trusted)
        .map(|i| headers[i].value)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic()));
    match proxy_rid {
        Some(v) => s.rid.push_str(std::str::from_utf8(v).unwrap_or("")),
        None => inner.request_id(&mut s.rid),
    }

    let hop = Hop {
        peer_ip,
        tls,
        trusted: trusted.then_some(&inner.cfg.trusted_proxies),
    };
    write_upstream_head(s, headers, &f, framing, upgrade, &hop);
    Ok(Req {
        framing,
        minor,
        keep_alive,
        upgrade,
        head: method == "HEAD",
        idempotent: http::is_idempotent(method),
        expect_continue: f.expect_continue,
        head_len,
    })
}

/// The hop the request came over: the peer, whether over TLS, and the trusted proxies when the
/// peer is one of them.
struct Hop<'a> {
    peer_ip: &'a str,
    tls: bool,
    trusted: Option<&'a TrustedProxies>,
}

/// Writes the request head to forward into `s.out`: hop-by-hop headers dropped, the forwarded
/// headers and `X-Request-Id` written by the router (a trusted proxy's kept, the peer appended),
/// framing re-stated.
fn write_upstream_head(
    s: &mut Scratch,
    headers: &[httparse::Header<'_>],
    f: &HeadFacts,
    framing: Framing,
    upgrade: bool,
    hop: &Hop<'_>,
) {
    let out = &mut s.out;
    out.clear();
    out.extend_from_slice(s.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(s.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    s.xff.clear();
    s.xfp.clear();
    s.xfh.clear();
    s.fwd.clear();
    for h in headers.iter() {
        let n = h.name;
        if http::drop_when_forwarding(n)
            || (f.expect_continue && n.eq_ignore_ascii_case("expect"))
            || (f.conn_lists_others && HeadFacts::connection_listed(headers, n))
        {
            continue;
        }
        if forwarded::is_router_written(n) {
            if hop.trusted.is_some() {
                let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                let (into, sep) = match n.len() {
                    15 if n.eq_ignore_ascii_case("x-forwarded-for") => (&mut s.xff, ", "),
                    9 if n.eq_ignore_ascii_case("forwarded") => (&mut s.fwd, ", "),
                    17 if n.eq_ignore_ascii_case("x-forwarded-proto") => (&mut s.xfp, ""),
                    16 if n.eq_ignore_ascii_case("x-forwarded-host") => (&mut s.xfh, ""),
                    _ => continue,
                };
                if sep.is_empty() {
                    into.clear();
                } else if !into.is_empty() {
                    into.push_str(sep);
                }
                into.push_str(v);
            }
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !s.xff.is_empty() {
        s.xff.push_str(", ");
    }
    s.xff.push_str(hop.peer_ip);
    out.extend_from_slice(b"X-Forwarded-For: ");
    out.extend_from_slice(s.xff.as_bytes());
    out.extend_from_slice(b"\r\nX-Real-IP: ");
    out.extend_from_slice(hop.trusted.map_or(hop.peer_ip, |t| t.client(&s.xff)).as_bytes());
    let proto = if hop.tls { "https" } else { "http" };
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(if s.xfp.is_empty() { proto } else { &s.xfp }.as_bytes());
    out.extend_from_slice(b"\r\n");
    let host = if s.xfh.is_empty() { &s.host_raw } else { &s.xfh };
    if !host.is_empty() {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Forwarded: ");
    if !s.fwd.is_empty() {
        out.extend_from_slice(s.fwd.as_bytes());
        out.extend_from_slice(b", ");
    }
    forwarded::forwarded_element(out, hop.peer_ip, proto, &s.host_raw);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"X-Request-Id: ");
    out.extend_from_slice(s.rid.as_bytes());
    out.extend_from_slice(b"\r\n");
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    if upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: ");
        out.extend_from_slice(s.upgrade.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The parsed upstream response head, with the client's response head written into `out`.
pub struct Resp {
    pub status: u16,
    pub head_len: usize,
    pub body: Framing,
    pub reusable: bool,
}

/// Parses a response head from `b` (None: incomplete) and writes the client's head into `out`.
pub fn parse_response(b: &[u8], out: &mut Vec<u8>, req: &Req, keep: bool, upgrade: &str) -> Result<Option<Resp>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(b) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(502),
    };
    let status = resp.code.unwrap_or(502);
    let minor = resp.version.unwrap_or(1);
    let headers = resp.headers;
    let f = HeadFacts::scan(headers).map_err(|_| 502u16)?;
    let body = http::response_framing(&f, req.head, status);
    let reusable = (if minor == 1 {
        !f.conn_close
    } else {
        f.conn_keep_alive && !f.conn_close
    }) && body != Framing::UntilClose
        && status != 101;
    if (100..200).contains(&status) && status != 101 {
        return Ok(Some(Resp {
            status,
            head_len,
            body,
            reusable,
        }));
    }
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let _ = write!(out, "{status} ");
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        if http::drop_when_forwarding(h.name) || (f.conn_lists_others && HeadFacts::connection_listed(headers, h.name))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    match body {
        Framing::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Framing::Chunked | Framing::UntilClose if req.minor == 1 => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
        }
        Framing::None if status == 101 => {
            out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: ");
            out.extend_from_slice(upgrade.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // A HEAD or 304 response keeps the length of the representation it describes.
        Framing::None if req.head || status == 304 => {
            if let Some(n) = f.content_length {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
        }
        Framing::None if status != 204 => out.extend_from_slice(b"Content-Length: 0\r\n"),
        _ => {}
    }
    let client_keep = keep && !(req.minor == 0 && matches!(body, Framing::Chunked | Framing::UntilClose));
    if status != 101 {
        if !client_keep {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if req.minor == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Resp {
        status,
        head_len,
        body,
        reusable,
    }))
}
