//! The snapshot's gzip stream, written as a series of gzip members (RFC 1952 allows it; `gzip -d`
//! and `tar -z` read them as one stream). The archive is cut in chunks: a stretch of chunks that
//! compress goes through one system `gzip -1`; a chunk that would not (random or already
//! compressed data: its bytes' entropy is near 8 bits) is written as deflate's stored blocks
//! here, which costs a CRC-32 instead of gzip's search for matches that are not there (that
//! search made `snapshot save` of random data 3.5x `tar`'s time). The judging reads a sample
//! of the chunk, the CRC-32 is crc32fast's (carry-less multiply where the CPU has it), and a
//! stored member goes out in one write: those three passes were half of what was left of a
//! save of random data. Root holds one chunk (and the stored member made of it).

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

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

/// How much of every `SAMPLE_EVERY` bytes of a chunk its judging reads: 1/16 of it, spread
/// evenly (a 4 MiB chunk: 64 pieces, 256 KiB, enough to tell random data from any other).
const SAMPLE: usize = 4096;
const SAMPLE_EVERY: usize = 16 * SAMPLE;

/// Whether gzip would shrink `chunk` by more than a little: the byte entropy of a sample of it
/// is below the mark.
fn compressible(chunk: &[u8]) -> bool {
    if chunk.len() < SAMPLE {
        return true;
    }
    let mut counts = [0u64; 256];
    let mut sampled = 0usize;
    for piece in chunk.chunks(SAMPLE_EVERY) {
        let piece = &piece[..piece.len().min(SAMPLE)];
        for &b in piece {
            counts[b as usize] += 1;
        }
        sampled += piece.len();
    }
    let n = sampled as f64;
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

/// One gzip member holding `data` in deflate's stored blocks (at most 65535 bytes each), made
/// in memory and written at once.
fn write_stored(out: &mut File, data: &[u8]) -> Result<()> {
    out.write_all(&stored_member(data)).context("cannot write the snapshot")
}

fn stored_member(data: &[u8]) -> Vec<u8> {
    let blocks = data.len().div_ceil(65535).max(1);
    let mut m = Vec::with_capacity(10 + 5 * blocks + data.len() + 8);
    // Magic, deflate, no flags, no time, no extra flags, OS unix.
    m.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    if data.is_empty() {
        m.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    let mut pieces = data.chunks(65535).peekable();
    while let Some(b) = pieces.next() {
        let last = pieces.peek().is_none();
        let len = b.len() as u16;
        m.push(u8::from(last));
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&(!len).to_le_bytes());
        m.extend_from_slice(b);
    }
    m.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    m.extend_from_slice(&(data.len() as u32).to_le_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32fast::hash(b""), 0);
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
