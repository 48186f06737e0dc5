//! An app's response head as the router reads it (for a GET and a HEAD), and its body re-framed
//! for the client.
#![no_main]
use gearshift_fuzz::router::body::{encode, ToClient};
use gearshift_fuzz::router::heads::{parse_request, parse_response, Scratch};
use gearshift_fuzz::router::shared::Inner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for request in [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], b"HEAD / HTTP/1.0\r\n\r\n"] {
        let mut s = Scratch::default();
        let req = parse_request(request, &mut s, &Inner::default(), "192.0.2.1", false).expect("a plain request parses");
        let mut out = Vec::new();
        if let Ok(Some(resp)) = parse_response(data, &mut out, &req, true, "") {
            let rest = &data[resp.head_len.min(data.len())..];
            let mut to = ToClient::new(resp.body, req.minor);
            let mut body = Vec::new();
            let mut at = 0;
            while at < rest.len() {
                match encode(&mut to, &rest[at..], &mut body) {
                    Ok((0, _)) | Err(_) => break,
                    Ok((n, done)) => {
                        at += n;
                        if done {
                            break;
                        }
                    }
                }
            }
        }
    }
});
