//! How a response body travels to the client: as is, or re-framed for the client's HTTP version.

use super::http::{ChunkScanner, Framing};
use std::io::Write;

/// How the response body travels to the client.
pub enum ToClient {
    /// Bytes as they come, `remaining` of them (u64::MAX: until the backend closes).
    Raw(u64),
    /// Chunked passed through as is.
    Chunked(ChunkScanner),
    /// Chunked decoded for an HTTP/1.0 client.
    Dechunk(ChunkScanner),
    /// Close-delimited body re-chunked for an HTTP/1.1 client.
    Rechunk,
}

impl ToClient {
    /// How a response body framed as `body` goes to a client speaking HTTP/1.`minor`.
    pub fn new(body: Framing, minor: u8) -> ToClient {
        match body {
            Framing::None => ToClient::Raw(0),
            Framing::Length(n) => ToClient::Raw(n),
            Framing::Chunked if minor == 1 => ToClient::Chunked(ChunkScanner::default()),
            Framing::Chunked => ToClient::Dechunk(ChunkScanner::default()),
            Framing::UntilClose if minor == 1 => ToClient::Rechunk,
            Framing::UntilClose => ToClient::Raw(u64::MAX),
        }
    }
}

/// Encodes `data` for the client into `out` (appending after whatever `out` holds).
/// Returns (bytes of `data` that belong to the body, body finished).
pub fn encode(to: &mut ToClient, data: &[u8], out: &mut Vec<u8>) -> anyhow::Result<(usize, bool)> {
    Ok(match to {
        ToClient::Raw(left) => {
            let k = if *left == u64::MAX {
                data.len()
            } else {
                (*left as usize).min(data.len())
            };
            out.extend_from_slice(&data[..k]);
            if *left != u64::MAX {
                *left -= k as u64;
            }
            (k, *left == 0)
        }
        ToClient::Chunked(sc) => {
            let k = sc.scan(data, |_| {})?;
            out.extend_from_slice(&data[..k]);
            (k, sc.done())
        }
        ToClient::Dechunk(sc) => {
            let k = sc.scan(data, |d| out.extend_from_slice(d))?;
            (k, sc.done())
        }
        ToClient::Rechunk => {
            if !data.is_empty() {
                let _ = write!(out, "{:x}\r\n", data.len());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            (data.len(), false)
        }
    })
}
