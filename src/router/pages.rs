//! The small HTML pages the router answers with itself (404, 502, 503, 431, 400) and the HTTPS redirect.

use std::io::{self, Write};

/// The whole answer to a client connection over the cap, which is closed at once.
pub const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Status line reason phrase for the statuses the router produces itself.
fn reason(status: u16) -> &'static str {
    match status {
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The explanation shown under the title.
fn explanation(status: u16) -> &'static str {
    match status {
        400 => "The request could not be understood.",
        404 => "No app is served at this address. Check the name, or add it with <code>gearshift domain add</code>.",
        408 => "The request took too long to arrive.",
        431 => "The request headers are too large.",
        502 => "The app is not answering. It may have crashed or be stopped; see <code>gearshift app status</code>.",
        503 => "The app is starting and did not answer in time. Please retry in a moment.",
        _ => "Something went wrong.",
    }
}

/// Minimal HTML-escaping for the host name shown on a page.
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The HTML body of an error page for `status`, naming `host` when known.
pub fn body(status: u16, host: &str) -> String {
    let title = format!("{status} {}", reason(status));
    let host = if host.is_empty() {
        String::new()
    } else {
        format!("<p><b>{}</b></p>", escape(host))
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>body{{font-family:sans-serif;\
         max-width:40em;margin:4em auto;color:#333}}h1{{font-weight:normal}}</style></head><body><h1>{title}</h1>\
         {host}<p>{}</p><hr><small>gearshift</small></body></html>\n",
        explanation(status)
    )
}

/// Writes a complete error response; `close` adds `Connection: close`. Returns the bytes written.
pub fn write_error(w: &mut impl Write, status: u16, host: &str, head_only: bool, close: bool) -> io::Result<u64> {
    let body = body(status, host);
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    if !head_only {
        out.push_str(&body);
    }
    w.write_all(out.as_bytes())?;
    Ok(out.len() as u64)
}

/// Writes a 200 with `text` as a plain-text body (an ACME challenge's answer). Returns the bytes written.
pub fn write_text(w: &mut impl Write, text: &str, head_only: bool, close: bool) -> io::Result<u64> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n",
        text.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    if !head_only {
        out.push_str(text);
    }
    w.write_all(out.as_bytes())?;
    Ok(out.len() as u64)
}

/// Writes a 301 to `https://{authority}{path}`. Returns the bytes written.
pub fn write_redirect(w: &mut impl Write, authority: &str, path: &str, close: bool) -> io::Result<u64> {
    let out = format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: https://{authority}{path}\r\nContent-Length: 0\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    w.write_all(out.as_bytes())?;
    Ok(out.len() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pages_escape_host() {
        let b = super::body(404, "<x>");
        assert!(b.contains("404 Not Found") && b.contains("&lt;x&gt;"));
    }
}
