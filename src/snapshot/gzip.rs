//! The snapshot's gzip stream, written as a series of gzip members (RFC 1952 allows it; `gzip -d`
//! and `tar -z` read them as one stream). The archive is cut in chunks: a stretch of chunks that
//! compress goes through one system `gzip -1`; a chunk that would not (random or already
//! compressed data: its bytes' entropy is near 8 bits) is written as deflate's stored blocks
//! here, which costs a CRC-32 instead of gzip's search for matches that are not there (that
//! search made `snapshot save` of random data 3.5x `tar`'s time). Root holds one chunk.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

/// How much of the archive is judged at once (and held in memory).
pub const CHUNK: usize = 4 << 20;
/// Bits per byte above which a chunk is stored: gzip -1 would shrink it by a few percent at
/// most, at 20-50 times the cost.
const STORE_ABOVE_BITS: f64 = 7.5;

/// Writes a gzip stream of what is written to it into `out`.
pub struct Writer {
    out: File,
    chunk: usize,
    buf: Vec<u8>,
    gzip: Option<(Child, BufWriter<ChildStdin>)>,
}

impl Writer {
    pub fn new(out: File) -> Writer {
        Writer::with_chunk(out, CHUNK)
    }

    fn with_chunk(out: File, chunk: usize) -> Writer {
        Writer {
            out,
            chunk,
            buf: Vec::with_capacity(chunk),
            gzip: None,
        }
    }

    /// Writes what is buffered and ends the stream.
    pub fn finish(mut self) -> Result<()> {
        if !self.buf.is_empty() || self.gzip.is_none() {
            self.flush_chunk()?;
        }
        self.end_gzip()
    }

    fn flush_chunk(&mut self) -> Result<()> {
        let chunk = std::mem::take(&mut self.buf);
        if compressible(&chunk) {
            if self.gzip.is_none() {
                let mut child = Command::new("gzip")
                    .args(["-1", "-c"])
                    .stdin(Stdio::piped())
                    .stdout(
                        self.out
                            .try_clone()
                            .context("cannot pass the snapshot's output to gzip")?,
                    )
                    .spawn()
                    .context("cannot run gzip (install it: make deps)")?;
                let stdin = child.stdin.take().context("gzip's stdin")?;
                self.gzip = Some((child, BufWriter::with_capacity(1 << 16, stdin)));
            }
            let (_, stdin) = self.gzip.as_mut().expect("started above");
            stdin.write_all(&chunk).context("gzip stopped reading the snapshot")?;
        } else {
            self.end_gzip()?;
            write_stored(&mut self.out, &chunk)?;
        }
        self.buf = chunk;
        self.buf.clear();
        Ok(())
    }

    /// Ends the running gzip's member (it writes its trailer and exits).
    fn end_gzip(&mut self) -> Result<()> {
        let Some((mut child, stdin)) = self.gzip.take() else {
            return Ok(());
        };
        // gzip ends its member at the end of its input: its stdin is closed before the wait.
        let flushed = stdin.into_inner().map(drop).map_err(|e| e.into_error());
        let status = child.wait()?;
        flushed.context("gzip stopped reading the snapshot")?;
        if !status.success() {
            bail!("gzip failed writing the snapshot ({status})");
        }
        Ok(())
    }
}

impl Write for Writer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.flush_chunk().map_err(std::io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether gzip would shrink `chunk` by more than a little: its byte entropy is below the mark.
fn compressible(chunk: &[u8]) -> bool {
    if chunk.len() < 4096 {
        return true;
    }
    let mut counts = [0u64; 256];
    for &b in chunk {
        counts[b as usize] += 1;
    }
    let n = chunk.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    bits < STORE_ABOVE_BITS
}

/// One gzip member holding `data` in deflate's stored blocks (at most 65535 bytes each).
fn write_stored(out: &mut File, data: &[u8]) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 16, out);
    // Magic, deflate, no flags, no time, no extra flags, OS unix.
    w.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
    let mut blocks = data.chunks(65535).peekable();
    if blocks.peek().is_none() {
        w.write_all(&[1, 0, 0, 0xff, 0xff])?;
    }
    while let Some(b) = blocks.next() {
        let last = blocks.peek().is_none();
        let len = b.len() as u16;
        w.write_all(&[u8::from(last)])?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(&(!len).to_le_bytes())?;
        w.write_all(b)?;
    }
    w.write_all(&crc32(data).to_le_bytes())?;
    w.write_all(&(data.len() as u32).to_le_bytes())?;
    w.flush().context("cannot write the snapshot")?;
    Ok(())
}

/// gzip's CRC-32 (slicing by 8 bytes).
fn crc32(data: &[u8]) -> u32 {
    static TABLES: OnceLock<[[u32; 256]; 8]> = OnceLock::new();
    let t = TABLES.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        for (i, entry) in t[0].iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *entry = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                t[k][i] = (t[k - 1][i] >> 8) ^ t[0][(t[k - 1][i] & 0xff) as usize];
            }
        }
        t
    });
    let mut c = !0u32;
    let mut eights = data.chunks_exact(8);
    for b in &mut eights {
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) ^ c;
        let hi = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in eights.remainder() {
        c = t[0][((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut v).unwrap();
        v
    }

    #[test]
    fn random_is_stored_text_is_compressed() {
        assert!(!compressible(&random(1 << 16)));
        assert!(compressible(&b"hello snapshot\n".repeat(5000)));
        assert!(compressible(b"short"));
    }

    /// Mixed data (text, random, text, an odd tail) through small chunks: `gzip -t` accepts the
    /// stream, `gzip -dc` gives the data back, and the random part is not expanded much.
    #[test]
    fn gzip_reads_the_members_back() {
        let dir = std::env::temp_dir().join(format!("gs-gzip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (tag, data, most) in [
            ("empty", vec![], 100),
            (
                "mixed",
                {
                    let mut d = b"text line\n".repeat(30_000);
                    d.extend(random(700_000));
                    d.extend(b"more text\n".repeat(20_000));
                    d.extend(random(12_345));
                    d
                },
                712_345 + 60_000,
            ),
        ] {
            let f = dir.join(format!("{tag}.gz"));
            let mut w = Writer::with_chunk(std::fs::File::create(&f).unwrap(), 1 << 16);
            w.write_all(&data).unwrap();
            w.finish().unwrap();
            let t = Command::new("gzip").arg("-t").arg(&f).status().unwrap();
            assert!(t.success(), "{tag}: gzip -t refused it");
            let o = Command::new("gzip").arg("-dc").arg(&f).output().unwrap();
            assert!(o.stdout == data, "{tag}: gzip -dc gave other data back");
            let size = std::fs::metadata(&f).unwrap().len() as usize;
            assert!(size < most, "{tag}: {size} bytes for {}", data.len());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
