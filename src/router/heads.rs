//! Request and response heads: parse what the client or backend sent, and write the head to forward
//! (hop-by-hop headers dropped, `X-Forwarded-*` and `X-Request-Id` added, framing re-stated).

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
    s.rid.clear();
    let client_rid = f
        .request_id
        .map(|i| headers[i].value)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic()));
    match client_rid {
        Some(v) => s.rid.push_str(std::str::from_utf8(v).unwrap_or("")),
        None => inner.request_id(&mut s.rid),
    }

    write_upstream_head(s, headers, &f, framing, upgrade, peer_ip, tls);
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

/// Writes the request head to forward into `s.out`: hop-by-hop headers dropped, `X-Forwarded-*` and
/// `X-Request-Id` added, framing re-stated.
fn write_upstream_head(
    s: &mut Scratch,
    headers: &[httparse::Header<'_>],
    f: &HeadFacts,
    framing: Framing,
    upgrade: bool,
    peer_ip: &str,
    tls: bool,
) {
    let out = &mut s.out;
    out.clear();
    out.extend_from_slice(s.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(s.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    s.xff.clear();
    for h in headers.iter() {
        let n = h.name;
        if http::drop_when_forwarding(n)
            || n.eq_ignore_ascii_case("x-forwarded-proto")
            || n.eq_ignore_ascii_case("x-forwarded-host")
            || n.eq_ignore_ascii_case("x-request-id")
            || (f.expect_continue && n.eq_ignore_ascii_case("expect"))
            || (f.conn_lists_others && HeadFacts::connection_listed(headers, n))
        {
            continue;
        }
        if n.eq_ignore_ascii_case("x-forwarded-for") {
            if !s.xff.is_empty() {
                s.xff.push_str(", ");
            }
            s.xff.push_str(std::str::from_utf8(h.value).unwrap_or("").trim());
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if !s.xff.is_empty() {
        out.extend_from_slice(s.xff.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer_ip.as_bytes());
    out.extend_from_slice(if tls {
        b"\r\nX-Forwarded-Proto: https\r\n"
    } else {
        b"\r\nX-Forwarded-Proto: http\r\n"
    });
    if !s.host_raw.is_empty() {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(s.host_raw.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
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
