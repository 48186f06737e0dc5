//! A small static file server for the static cartridge (helper-owned).
//!
//! HTTP/1.1 GET and HEAD with keep-alive, one thread per connection (at most
//! [`MAX_CONNECTIONS`]; more get a 503), `index.html` for directories, Content-Type by
//! extension, Last-Modified / If-Modified-Since, files streamed from disk. Refused: `..`
//! segments and NUL bytes (400), dotfiles such as `.git` or `.openshift` and symlinks leading
//! out of the served directory (404), request heads over 8 KiB (431). A connection that sends
//! nothing for 10 s is closed.

use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Concurrent connections served; the next ones get a 503 and are closed.
const MAX_CONNECTIONS: usize = 256;
/// Largest accepted request line plus headers.
const MAX_HEAD: usize = 8 * 1024;
/// How long a connection may stay silent (also the keep-alive idle timeout).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the files under `dir` on `addr` until killed.
pub fn serve(dir: &Path, addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("static: serving {} on http://{addr}/", dir.display());
    serve_on(listener, dir)
}

/// Accept loop on an already bound listener (tests bind 127.0.0.1:0).
fn serve_on(listener: TcpListener, dir: &Path) -> Result<()> {
    let root = Arc::new(
        dir.canonicalize()
            .with_context(|| format!("cannot serve {}", dir.display()))?,
    );
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: do not spin.
                eprintln!("static: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = respond_error(&mut stream, 503, "Service Unavailable", false, false);
            continue;
        }
        let slot = Slot(active.clone());
        let root = root.clone();
        let spawned = std::thread::Builder::new()
            .name("static-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _slot = slot;
                let _ = handle_connection(stream, &root);
            });
        if let Err(e) = spawned {
            eprintln!("static: cannot start a thread: {e}");
        }
    }
    Ok(())
}

/// Releases a connection slot when the connection's thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One parsed request head.
struct Request {
    method: String,
    target: String,
    keep_alive: bool,
    has_body: bool,
    if_modified_since: Option<u64>,
}

enum Head {
    Request(Request),
    /// Clean end of the connection (EOF or idle timeout before a request started).
    Closed,
    /// Malformed or oversized: answer with this status and close.
    Bad(u16, &'static str),
}

fn handle_connection(stream: TcpStream, root: &Path) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::with_capacity(MAX_HEAD, stream.try_clone()?);
    let mut out = stream;
    loop {
        let req = match read_head(&mut reader) {
            Head::Request(r) => r,
            Head::Closed => return Ok(()),
            Head::Bad(code, reason) => {
                respond_error(&mut out, code, reason, false, false)?;
                return linger_close(&mut out, &mut reader);
            }
        };
        // Bodies are never read: a request that has one ends the connection after the answer.
        let keep_alive = req.keep_alive && !req.has_body;
        respond(&mut out, root, &req, keep_alive)?;
        if !keep_alive {
            return linger_close(&mut out, &mut reader);
        }
    }
}

/// Closes after an answer while the client may still be sending (an oversized head, a body):
/// closing with unread input makes the kernel send a reset, which can destroy the answer
/// before the client reads it. So: end our side, then drain a little for at most a second.
fn linger_close(out: &mut TcpStream, reader: &mut BufReader<TcpStream>) -> io::Result<()> {
    out.flush()?;
    out.shutdown(std::net::Shutdown::Write)?;
    out.set_read_timeout(Some(Duration::from_secs(1)))?;
    let _ = io::copy(&mut reader.by_ref().take(256 * 1024), &mut io::sink());
    Ok(())
}

/// Reads the request line and headers, at most [`MAX_HEAD`] bytes.
fn read_head(reader: &mut BufReader<TcpStream>) -> Head {
    let mut lines: Vec<String> = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = Vec::new();
        let limit = (MAX_HEAD - total + 1) as u64;
        match reader.by_ref().take(limit).read_until(b'\n', &mut line) {
            Ok(0) => {
                return if lines.is_empty() {
                    Head::Closed
                } else {
                    Head::Bad(400, "Bad Request")
                };
            }
            Ok(n) => total += n,
            Err(_) if lines.is_empty() && total == 0 => return Head::Closed,
            Err(_) => return Head::Bad(408, "Request Timeout"),
        }
        if total > MAX_HEAD {
            return Head::Bad(431, "Request Header Fields Too Large");
        }
        if !line.ends_with(b"\n") {
            // EOF in the middle of a line.
            return Head::Bad(400, "Bad Request");
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate blank lines before a request (RFC 9112 2.2)
            }
            break;
        }
        match String::from_utf8(line) {
            Ok(s) => lines.push(s),
            Err(_) => return Head::Bad(400, "Bad Request"),
        }
    }
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Bad(400, "Bad Request");
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Head::Bad(505, "HTTP Version Not Supported"),
    };
    let mut keep_alive = http11;
    let mut has_body = false;
    let mut if_modified_since = None;
    for h in &lines[1..] {
        let Some((name, value)) = h.split_once(':') else {
            return Head::Bad(400, "Bad Request");
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "connection" => {
                for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                    match token.as_str() {
                        "close" => keep_alive = false,
                        "keep-alive" => keep_alive = true,
                        _ => {}
                    }
                }
            }
            "content-length" => has_body |= value != "0",
            "transfer-encoding" => has_body = true,
            "if-modified-since" => if_modified_since = parse_http_date(value),
            _ => {}
        }
    }
    Head::Request(Request {
        method: method.to_string(),
        target: target.to_string(),
        keep_alive,
        has_body,
        if_modified_since,
    })
}

/// What a request path resolves to.
enum Resolved {
    File(PathBuf),
    /// A directory asked for without its trailing slash: redirect here.
    Redirect(String),
    Error(u16, &'static str),
}

fn respond(out: &mut TcpStream, root: &Path, req: &Request, keep_alive: bool) -> io::Result<()> {
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        let extra = "Allow: GET, HEAD\r\n";
        return write_error(out, 405, "Method Not Allowed", extra, keep_alive, false);
    }
    match resolve(root, &req.target) {
        Resolved::Error(code, reason) => respond_error(out, code, reason, keep_alive, head_only),
        Resolved::Redirect(location) => {
            let extra = format!("Location: {location}\r\n");
            write_error(out, 301, "Moved Permanently", &extra, keep_alive, head_only)
        }
        Resolved::File(path) => {
            let (file, meta) = match File::open(&path).and_then(|f| f.metadata().map(|m| (f, m))) {
                Ok(fm) if fm.1.is_file() => fm,
                _ => return respond_error(out, 404, "Not Found", keep_alive, head_only),
            };
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let common = format!(
                "Date: {}\r\nServer: gearshift\r\nLast-Modified: {}\r\nConnection: {}\r\n",
                http_date(crate::clock::now()),
                http_date(mtime),
                if keep_alive { "keep-alive" } else { "close" },
            );
            if req.if_modified_since.is_some_and(|ims| mtime <= ims) {
                return out.write_all(format!("HTTP/1.1 304 Not Modified\r\n{common}\r\n").as_bytes());
            }
            let len = meta.len();
            let head = format!(
                "HTTP/1.1 200 OK\r\n{common}Content-Type: {}\r\nContent-Length: {len}\r\n\r\n",
                content_type(&path)
            );
            out.write_all(head.as_bytes())?;
            if !head_only {
                // Streams (sendfile where the platform allows); never the whole file in memory.
                let sent = io::copy(&mut file.take(len), out)?;
                if sent != len {
                    // The file shrank while being sent: the framing is broken, close.
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
                }
            }
            Ok(())
        }
    }
}

/// Maps a request target to a file under `root`, refusing anything outside it.
fn resolve(root: &Path, target: &str) -> Resolved {
    // Absolute form (`GET http://host/path`), then drop the query and fragment.
    let mut raw = target;
    for scheme in ["http://", "https://"] {
        if let Some(rest) = raw.strip_prefix(scheme) {
            raw = rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    let path_part = raw.split(['?', '#']).next().unwrap_or("");
    if !path_part.starts_with('/') {
        return Resolved::Error(400, "Bad Request");
    }
    let Some(decoded) = percent_decode(path_part.as_bytes()) else {
        return Resolved::Error(400, "Bad Request");
    };
    if decoded.contains(&0) {
        return Resolved::Error(400, "Bad Request");
    }
    let mut path = root.to_path_buf();
    for seg in decoded.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => return Resolved::Error(400, "Bad Request"),
            s if s.starts_with(b".") => return Resolved::Error(404, "Not Found"),
            s => path.push(OsStr::from_bytes(s)),
        }
    }
    // Symlinks may point anywhere: the real path must stay under root and not be a dotfile.
    let Ok(real) = path.canonicalize() else {
        return Resolved::Error(404, "Not Found");
    };
    let Ok(rel) = real.strip_prefix(root) else {
        return Resolved::Error(404, "Not Found");
    };
    if rel
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n.as_bytes().starts_with(b".")))
    {
        return Resolved::Error(404, "Not Found");
    }
    if real.is_dir() {
        if !path_part.ends_with('/') {
            let query = &raw[path_part.len()..];
            return Resolved::Redirect(format!("{path_part}/{query}"));
        }
        let index = real.join("index.html");
        return if index.is_file() {
            Resolved::File(index)
        } else {
            Resolved::Error(404, "Not Found")
        };
    }
    Resolved::File(real)
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn respond_error(out: &mut TcpStream, code: u16, reason: &str, keep_alive: bool, head_only: bool) -> io::Result<()> {
    write_error(out, code, reason, "", keep_alive, head_only)
}

/// A small HTML page for a status; `extra` holds additional header lines.
fn write_error(
    out: &mut TcpStream,
    code: u16,
    reason: &str,
    extra: &str,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1></body></html>\n"
    );
    let mut msg = format!(
        "HTTP/1.1 {code} {reason}\r\nDate: {}\r\nServer: gearshift\r\n{extra}\
         Content-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        http_date(crate::clock::now()),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    if !head_only {
        msg.push_str(&body);
    }
    out.write_all(msg.as_bytes())
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "pdf" => "application/pdf",
        "md" => "text/markdown; charset=utf-8",
        _ => "application/octet-stream",
    }
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) of seconds since the epoch.
fn http_date(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let (y, m, d) = crate::clock::civil(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses an IMF-fixdate; other (obsolete) formats give None, which only disables the 304.
fn parse_http_date(s: &str) -> Option<u64> {
    let f: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = f.as_slice() else {
        return None;
    };
    let d: u32 = day.parse().ok()?;
    let m = MONTHS.iter().position(|x| x == mon)? as u32 + 1;
    let y: i64 = year.parse().ok()?;
    let t: Vec<u64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [hh, mm, ss] = t.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&d) || *hh > 23 || *mm > 59 || *ss > 60 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    u64::try_from(days * 86400).ok().map(|s| s + hh * 3600 + mm * 60 + ss)
}

// The inverse of crate::clock::civil (Howard Hinnant's days_from_civil).

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::atomic::AtomicU32;

    static N: AtomicU32 = AtomicU32::new(0);

    /// A fresh temp dir with a small site, served on 127.0.0.1:0.
    fn site() -> (SocketAddr, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "gearshift-static-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::create_dir_all(dir.join("empty")).unwrap();
        fs::create_dir_all(dir.join(".git")).unwrap();
        fs::write(dir.join("index.html"), "<h1>home</h1>").unwrap();
        fs::write(dir.join("style.css"), "body{}").unwrap();
        fs::write(dir.join("sub/index.html"), "sub index").unwrap();
        fs::write(dir.join("sub/a b.txt"), "spaced").unwrap();
        fs::write(dir.join(".git/config"), "secret").unwrap();
        fs::write(dir.join(".env"), "secret").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("escape")).unwrap();
        std::os::unix::fs::symlink(".git/config", dir.join("sneaky")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let d = dir.clone();
        std::thread::spawn(move || serve_on(listener, &d));
        (addr, dir)
    }

    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads one response; `head` says the request was HEAD (no body follows).
    fn read_resp(r: &mut BufReader<TcpStream>, head: bool) -> Resp {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').unwrap();
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        let len: u64 = resp.header("content-length").map_or(0, |v| v.parse().unwrap());
        if !head && status != 304 {
            r.by_ref().take(len).read_to_end(&mut resp.body).unwrap();
            assert_eq!(resp.body.len() as u64, len);
        }
        resp
    }

    fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    }

    fn req(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Resp {
        let (mut s, mut r) = connect(addr);
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
        )
        .unwrap();
        read_resp(&mut r, method == "HEAD")
    }

    fn get(addr: SocketAddr, path: &str) -> Resp {
        req(addr, "GET", path, "")
    }

    #[test]
    fn static_server_get_and_head() {
        let (addr, _dir) = site();
        let r = get(addr, "/style.css");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"body{}");
        assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
        assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
        let h = req(addr, "HEAD", "/style.css", "");
        assert_eq!(h.status, 200);
        assert_eq!(h.header("content-length"), Some("6"));
        assert!(h.body.is_empty());
        let r = get(addr, "/sub/a%20b.txt?x=1");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"spaced"[..]));
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }

    #[test]
    fn static_server_not_found_and_method() {
        let (addr, _dir) = site();
        let r = get(addr, "/nope.html");
        assert_eq!(r.status, 404);
        assert!(String::from_utf8_lossy(&r.body).contains("404 Not Found"));
        assert_eq!(get(addr, "/empty/").status, 404);
        let r = req(addr, "POST", "/index.html", "Content-Length: 0\r\n");
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }

    #[test]
    fn static_server_refuses_traversal_and_nul() {
        let (addr, _dir) = site();
        for p in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/%2e%2e/etc/passwd",
            "/sub/../../etc/passwd",
            "/sub/%2e%2e%2f%2e%2e%2fetc/passwd",
            "/a%00b",
            "/bad%zz",
            "etc/passwd",
        ] {
            assert_eq!(get(addr, p).status, 400, "{p}");
        }
        // Symlinks out of the root are not followed.
        assert_eq!(get(addr, "/escape").status, 404);
    }

    #[test]
    fn static_server_hides_dotfiles() {
        let (addr, _dir) = site();
        for p in [
            "/.git/config",
            "/.git/",
            "/.env",
            "/%2egit/config",
            "/sub/.hidden",
            "/sneaky",
        ] {
            assert_eq!(get(addr, p).status, 404, "{p}");
        }
    }

    #[test]
    fn static_server_directory_index_and_redirect() {
        let (addr, _dir) = site();
        let r = get(addr, "/");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"<h1>home</h1>"[..]));
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let r = get(addr, "/sub?q=1");
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location"), Some("/sub/?q=1"));
        assert_eq!(get(addr, "/sub/").body, b"sub index");
    }

    #[test]
    fn static_server_keep_alive_and_304() {
        let (addr, _dir) = site();
        let (mut s, mut r) = connect(addr);
        write!(s, "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let first = read_resp(&mut r, false);
        assert_eq!(first.status, 200);
        assert_eq!(first.header("connection"), Some("keep-alive"));
        let lm = first.header("last-modified").unwrap().to_string();
        write!(s, "GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_resp(&mut r, false).body, b"body{}");
        write!(s, "GET /index.html HTTP/1.1\r\nIf-Modified-Since: {lm}\r\n\r\n").unwrap();
        assert_eq!(read_resp(&mut r, false).status, 304);
        write!(
            s,
            "GET /index.html HTTP/1.1\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n"
        )
        .unwrap();
        assert_eq!(read_resp(&mut r, false).status, 200);
        // Connection: close ends it.
        write!(s, "HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(read_resp(&mut r, true).status, 200);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn static_server_big_file_streamed() {
        let (addr, dir) = site();
        let data: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        fs::write(dir.join("big.wasm"), &data).unwrap();
        let r = get(addr, "/big.wasm");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/wasm"));
        assert!(r.body == data);
    }

    #[test]
    fn static_server_header_cap() {
        let (addr, _dir) = site();
        let (mut s, mut r) = connect(addr);
        let big = "a".repeat(MAX_HEAD);
        // The server may close before reading all of it; the write may then fail.
        let _ = write!(s, "GET / HTTP/1.1\r\nX-Big: {big}\r\n\r\n");
        assert_eq!(read_resp(&mut r, false).status, 431);
    }

    #[test]
    fn static_server_http_dates() {
        assert_eq!(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        for t in [0, 951782400, 1709208000, 4102444799] {
            assert_eq!(parse_http_date(&http_date(t)), Some(t));
        }
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }
}
