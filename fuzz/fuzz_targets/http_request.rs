//! A client's request head and body as the router reads them: the head parser (which also writes
//! the head forwarded upstream), then the body's framing (chunked bodies through the scanner).
#![no_main]
use gearshift_fuzz::router::heads::{parse_request, Scratch};
use gearshift_fuzz::router::http::{ChunkScanner, Framing};
use gearshift_fuzz::router::shared::Inner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut s = Scratch::default();
    let Ok(req) = parse_request(data, &mut s, &Inner::default(), "192.0.2.1", data.first() == Some(&b'G')) else {
        return;
    };
    assert!(req.head_len <= data.len());
    assert!(!s.out.is_empty(), "an accepted request forwards a head");
    let body = &data[req.head_len..];
    if let Framing::Chunked = req.framing {
        let mut scanner = ChunkScanner::default();
        let mut at = 0;
        while at < body.len() && !scanner.done() {
            match scanner.scan(&body[at..], |_| {}) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    assert!(n <= body.len() - at, "the scanner consumed more than it was given");
                    at += n;
                }
            }
        }
    }
});
