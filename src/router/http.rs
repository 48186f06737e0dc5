//! HTTP/1 message framing: head facts the proxy needs, hop-by-hop filtering, a chunked-body scanner.

use anyhow::{bail, Result};

/// How a message body is delimited on the wire (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Header names the proxy removes before forwarding, in either direction: the hop-by-hop ones (RFC 9110
/// §7.6.1) plus the framing headers, which the proxy writes itself. `Upgrade` is re-added for upgrades only.
pub fn drop_when_forwarding(name: &str) -> bool {
    const HOP: [&str; 7] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name.eq_ignore_ascii_case("proxy-authorization")
        || name.eq_ignore_ascii_case("content-length")
}

/// True when the comma-separated `value` holds `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// What the proxy needs to know from a header block, gathered in one pass.
#[derive(Debug, Default)]
pub struct HeadFacts {
    /// Parsed `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding` present and its final coding is chunked.
    pub chunked: bool,
    /// `Transfer-Encoding` present with a final coding other than chunked.
    pub other_te: bool,
    /// `Connection: close`.
    pub conn_close: bool,
    /// `Connection: keep-alive`.
    pub conn_keep_alive: bool,
    /// `Connection: upgrade`.
    pub conn_upgrade: bool,
    /// Index of the `Upgrade` header.
    pub upgrade: Option<usize>,
    /// Index of the `Host` header.
    pub host: Option<usize>,
    /// Index of `X-Request-Id`.
    pub request_id: Option<usize>,
    /// Index of `X-Forwarded-For`.
    pub forwarded_for: Option<usize>,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The `Connection` header lists other names; those headers must be dropped too.
    pub conn_lists_others: bool,
}

impl HeadFacts {
    /// Scans `headers` once; fails on conflicting or malformed framing headers (request smuggling guards).
    pub fn scan(headers: &[httparse::Header<'_>]) -> Result<HeadFacts> {
        let mut f = HeadFacts::default();
        for (i, h) in headers.iter().enumerate() {
            let n = h.name;
            match n.len() {
                4 if n.eq_ignore_ascii_case("host") => {
                    if f.host.is_some() {
                        bail!("more than one Host header");
                    }
                    f.host = Some(i);
                }
                6 if n.eq_ignore_ascii_case("expect") => {
                    f.expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
                }
                7 if n.eq_ignore_ascii_case("upgrade") => f.upgrade = Some(i),
                10 if n.eq_ignore_ascii_case("connection") => {
                    for t in h.value.split(|&b| b == b',') {
                        let t = t.trim_ascii();
                        if t.eq_ignore_ascii_case(b"close") {
                            f.conn_close = true;
                        } else if t.eq_ignore_ascii_case(b"keep-alive") {
                            f.conn_keep_alive = true;
                        } else if t.eq_ignore_ascii_case(b"upgrade") {
                            f.conn_upgrade = true;
                        } else if !t.is_empty() {
                            f.conn_lists_others = true;
                        }
                    }
                }
                12 if n.eq_ignore_ascii_case("x-request-id") => f.request_id = Some(i),
                14 if n.eq_ignore_ascii_case("content-length") => {
                    let v = std::str::from_utf8(h.value).ok().map(str::trim).and_then(|s| {
                        if s.bytes().all(|b| b.is_ascii_digit()) {
                            s.parse::<u64>().ok()
                        } else {
                            None
                        }
                    });
                    match (v, f.content_length) {
                        (None, _) => bail!("invalid Content-Length"),
                        (Some(a), Some(b)) if a != b => bail!("conflicting Content-Length headers"),
                        (Some(a), _) => f.content_length = Some(a),
                    }
                }
                15 if n.eq_ignore_ascii_case("x-forwarded-for") => f.forwarded_for = Some(i),
                17 if n.eq_ignore_ascii_case("transfer-encoding") => {
                    let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"").trim_ascii();
                    if last.eq_ignore_ascii_case(b"chunked") {
                        f.chunked = true;
                        f.other_te = false;
                    } else {
                        f.chunked = false;
                        f.other_te = true;
                    }
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// Names listed in `Connection` (besides close/keep-alive/upgrade) are hop-by-hop too.
    pub fn connection_listed(headers: &[httparse::Header<'_>], name: &str) -> bool {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .any(|h| has_token(h.value, name))
    }
}

/// Request body framing (RFC 9112 §6.3): both TE and CL, or a non-chunked TE, are refused.
pub fn request_framing(f: &HeadFacts) -> Result<Framing> {
    if f.other_te {
        bail!("unsupported Transfer-Encoding");
    }
    if f.chunked {
        if f.content_length.is_some() {
            bail!("both Transfer-Encoding and Content-Length");
        }
        return Ok(Framing::Chunked);
    }
    Ok(match f.content_length {
        Some(0) | None => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// Response body framing for a response to `method` with `status`.
pub fn response_framing(f: &HeadFacts, method_is_head: bool, status: u16) -> Framing {
    if method_is_head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Framing::None;
    }
    if f.chunked {
        return Framing::Chunked;
    }
    if f.other_te {
        return Framing::UntilClose;
    }
    match f.content_length {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    FinalLf,
    Done,
}

/// Incremental scanner for a chunked body: finds where it ends (so the raw bytes can be passed through as
/// they are) and, when asked, where the payload bytes are (to de-chunk for an HTTP/1.0 client).
#[derive(Debug)]
pub struct ChunkScanner {
    state: ChunkState,
    size: u64,
    digits: u32,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        ChunkScanner {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
        }
    }
}

impl ChunkScanner {
    /// True once the last chunk and the trailer section have been seen.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes bytes from `buf` up to the end of the body; returns how many belong to the body.
    /// `data` is called with each run of payload bytes.
    pub fn scan(&mut self, buf: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() && self.state != Done {
            let b = buf[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.digits += 1;
                        if self.digits > 15 {
                            bail!("chunk size too large");
                        }
                        self.size = self.size * 16 + d;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = Ext,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    b'\n' if self.digits > 0 => self.end_size_line(),
                    _ => bail!("invalid chunk size line"),
                },
                Ext => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => {}
                },
                SizeLf => {
                    if b != b'\n' {
                        bail!("invalid chunk size line ending");
                    }
                    self.end_size_line();
                }
                Data => {
                    let n = (buf.len() - i).min(self.size as usize);
                    data(&buf[i..i + n]);
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => match b {
                    b'\r' => self.state = DataLf,
                    b'\n' => self.state = Size,
                    _ => bail!("missing CRLF after chunk data"),
                },
                DataLf => {
                    if b != b'\n' {
                        bail!("missing LF after chunk data");
                    }
                    self.state = Size;
                }
                TrailerStart => match b {
                    b'\r' => self.state = FinalLf,
                    b'\n' => self.state = Done,
                    _ => self.state = TrailerLine,
                },
                TrailerLine => {
                    if b == b'\n' {
                        self.state = TrailerStart;
                    }
                }
                FinalLf => {
                    if b != b'\n' {
                        bail!("invalid end of chunked body");
                    }
                    self.state = Done;
                }
                Done => unreachable!(),
            }
            i += 1;
        }
        Ok(i)
    }

    fn end_size_line(&mut self) {
        if self.size == 0 {
            self.state = ChunkState::TrailerStart;
        } else {
            self.state = ChunkState::Data;
        }
        self.digits = 0;
    }
}

/// Host from a `Host` header value: lower-cased (only when needed), port and trailing dot removed.
pub fn normalize_host(raw: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    let host = if let Some(rest) = s.strip_prefix('[') {
        &s[..rest.find(']')? + 2]
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => s,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(host))
    }
}

/// Idempotent methods (RFC 9110 §9.2.2): safe to replay on a fresh upstream connection.
pub fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> (usize, Vec<u8>, bool) {
        let mut s = ChunkScanner::default();
        let mut out = Vec::new();
        let n = s.scan(input, |d| out.extend_from_slice(d)).unwrap();
        (n, out, s.done())
    }

    #[test]
    fn chunked_whole_and_trailers() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        let (n, data, done) = scan_all(body);
        assert!(done);
        assert_eq!(&body[n..], b"GET /next");
        assert_eq!(data, b"hello world");
    }

    #[test]
    fn chunked_byte_by_byte() {
        let body = b"a\r\n0123456789\r\n0\r\n\r\n";
        let mut s = ChunkScanner::default();
        let mut out = Vec::new();
        for b in body.iter() {
            assert!(!s.done());
            assert_eq!(
                s.scan(std::slice::from_ref(b), |d| out.extend_from_slice(d)).unwrap(),
                1
            );
        }
        assert!(s.done());
        assert_eq!(out, b"0123456789");
    }

    #[test]
    fn chunked_rejects_garbage() {
        assert!(ChunkScanner::default().scan(b"zz\r\n", |_| {}).is_err());
        assert!(ChunkScanner::default().scan(b"ffffffffffffffffff\r\n", |_| {}).is_err());
        assert!(ChunkScanner::default().scan(b"2\r\nabX", |_| {}).is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(normalize_host(b"Shop.Localhost:8080").unwrap(), "shop.localhost");
        assert_eq!(normalize_host(b"shop.localhost.").unwrap(), "shop.localhost");
        assert_eq!(normalize_host(b"[::1]:80").unwrap(), "[::1]");
        assert!(normalize_host(b"").is_none());
    }

    #[test]
    fn framing_guards() {
        let h = [
            httparse::Header {
                name: "Content-Length",
                value: b"5",
            },
            httparse::Header {
                name: "Transfer-Encoding",
                value: b"chunked",
            },
        ];
        assert!(request_framing(&HeadFacts::scan(&h).unwrap()).is_err());
        let h = [
            httparse::Header {
                name: "Content-Length",
                value: b"5",
            },
            httparse::Header {
                name: "content-length",
                value: b"6",
            },
        ];
        assert!(HeadFacts::scan(&h).is_err());
        let h = [httparse::Header {
            name: "Content-Length",
            value: b"+5",
        }];
        assert!(HeadFacts::scan(&h).is_err());
    }
}
