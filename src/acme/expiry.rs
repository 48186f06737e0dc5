//! When a certificate expires: the notAfter of the first certificate of a PEM chain, read with
//! a minimal DER walk (Certificate → TBSCertificate → validity), enough to plan its renewal.

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// One DER element at the start of `d`: (tag, contents, the rest after it).
fn element(d: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let (&tag, rest) = d.split_first().context("truncated DER")?;
    let (&first, rest) = rest.split_first().context("truncated DER")?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            bail!("bad DER length");
        }
        (rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize), &rest[n..])
    };
    if rest.len() < len {
        bail!("truncated DER");
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Unix seconds of a UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, v: &[u8]) -> Result<u64> {
    let s = std::str::from_utf8(v).context("bad certificate time")?;
    let (year, rest) = match (tag, s.len()) {
        (0x17, 13) => {
            let yy: i64 = s[..2].parse()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        (0x18, 15) => (s[..4].parse()?, &s[4..]),
        _ => bail!("unsupported certificate time {s:?}"),
    };
    let n = |i: usize| -> Result<i64> { Ok(rest[i..i + 2].parse()?) };
    let (mo, d, h, mi, se) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + h * 3600 + mi * 60 + se).max(0) as u64)
}

/// The notAfter (Unix seconds) of one DER certificate.
pub fn not_after_der(der: &[u8]) -> Result<u64> {
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    let mut rest = tbs;
    let (tag, _, r) = element(rest)?;
    if tag == 0xa0 {
        rest = r; // [0] version
    }
    for _ in 0..3 {
        rest = element(rest)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = element(rest)?;
    let (_, _, r) = element(validity)?;
    let (tag, v, _) = element(r)?;
    time(tag, v)
}

/// The notAfter (Unix seconds) of the first certificate in `pem`.
pub fn not_after(pem: &[u8]) -> Result<u64> {
    let first = CertificateDer::pem_slice_iter(pem)
        .next()
        .context("no certificate in the PEM")?
        .context("the certificate PEM is not valid")?;
    not_after_der(&first).context("cannot read the certificate's expiry")
}

#[cfg(test)]
mod tests {
    #[test]
    fn not_after_matches_what_was_issued() {
        for (y, m, d) in [(2031, 3, 1), (2049, 12, 31), (2051, 6, 15)] {
            let mut p = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            p.not_after = rcgen::date_time_ymd(y, m, d);
            let k = rcgen::KeyPair::generate().unwrap();
            let c = p.self_signed(&k).unwrap();
            let want = chrono::NaiveDate::from_ymd_opt(y, m as u32, d as u32)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp() as u64;
            assert_eq!(super::not_after(c.pem().as_bytes()).unwrap(), want, "{y}-{m}-{d}");
        }
        assert!(super::not_after(b"nothing").is_err());
        assert!(super::not_after_der(&[0x30, 0x05, 1]).is_err());
    }
}
