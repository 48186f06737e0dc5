//! HTTPS: certificates chosen by SNI (configured or self-signed per app) and the HTTP→HTTPS redirect.

use super::support::*;
use crate::router::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Accepts any certificate and remembers the last one it saw.
#[derive(Debug, Default)]
struct Capture(Mutex<Option<Vec<u8>>>);

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client connection to `addr` with SNI `host`; returns the client and the certificate it got.
fn tls_client(addr: SocketAddr, host: &str) -> (Client<StreamOwned<ClientConnection, TcpStream>>, Vec<u8>) {
    let capture = Arc::new(Capture::default());
    let cfg = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let conn = ClientConnection::new(Arc::new(cfg), ServerName::try_from(host.to_string()).unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    let cert = capture.0.lock().unwrap().clone().unwrap();
    (
        Client {
            r: std::io::BufReader::new(stream),
        },
        cert,
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sni_selects_configured_and_self_signed_certificates_and_http_redirects() {
    let (shop, blog) = (TestBackend::named("shop"), TestBackend::named("blog"));
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let secure = TcpListener::bind("127.0.0.1:0").unwrap();
    let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), secure.local_addr().unwrap());
    let cfg = RouterConfig {
        https_port: tls_addr.port(),
        ..RouterConfig::default()
    };
    let router = Router::new(cfg, Arc::new(NoWaker), Arc::new(NoAccessLog));
    let mut t = RouteTable::default();
    t.add(Route {
        app: "shop".into(),
        hosts: vec!["shop.test".into()],
        backends: vec![shop.backend("g1")],
        https_redirect: false,
    });
    t.add(Route {
        app: "blog".into(),
        hosts: vec!["blog.localhost".into(), "blog.example".into()],
        backends: vec![blog.backend("g2")],
        https_redirect: true,
    });
    router.set_routes(t);
    // shop.test has a configured certificate.
    let ck = rcgen::generate_simple_self_signed(vec!["shop.test".to_string()]).unwrap();
    let configured_der = ck.cert.der().to_vec();
    let store = Arc::new(CertStore::new());
    store
        .add_pem(
            &["shop.test"],
            ck.cert.pem().as_bytes(),
            ck.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
    router.serve_http(plain);
    router.serve_https(secure, store).unwrap();

    let (mut c, cert) = tls_client(tls_addr, "shop.test");
    assert_eq!(cert, configured_der, "the configured certificate for shop.test");
    let resp = c.get("shop.test", "/");
    assert_eq!((resp.status, resp.text().as_str()), (200, "shop"));
    assert_eq!(c.get("shop.test", "/again").text(), "shop", "keep-alive over TLS");

    let (mut c, cert) = tls_client(tls_addr, "blog.localhost");
    assert_ne!(cert, configured_der);
    assert!(
        contains(&cert, b"blog.localhost") && contains(&cert, b"blog.example"),
        "self-signed for the app's hosts"
    );
    assert_eq!(c.get("blog.localhost", "/").text(), "blog", "no redirect over HTTPS");
    // The alias gets the same per-app certificate.
    let (_, cert2) = tls_client(tls_addr, "blog.example");
    assert_eq!(cert, cert2);

    // Plain HTTP to blog redirects; to shop it does not.
    let resp = get(plain_addr, "blog.localhost", "/post?id=1");
    assert_eq!(resp.status, 301);
    assert_eq!(
        resp.header("location").unwrap(),
        format!("https://blog.localhost:{}/post?id=1", tls_addr.port())
    );
    assert_eq!(get(plain_addr, "shop.test", "/").text(), "shop");

    // ACME HTTP-01: the router answers a challenge put for a host itself, before the redirect,
    // and for a host no route names yet; never over TLS, never another host's or token's.
    let ch = router.challenges();
    ch.put("blog.localhost", "tok-1", "tok-1.thumb");
    ch.put("new.example", "tok-2", "tok-2.thumb");
    let resp = get(plain_addr, "blog.localhost", "/.well-known/acme-challenge/tok-1");
    assert_eq!((resp.status, resp.text().as_str()), (200, "tok-1.thumb"));
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    let resp = get(plain_addr, "new.example", "/.well-known/acme-challenge/tok-2");
    assert_eq!((resp.status, resp.text().as_str()), (200, "tok-2.thumb"));
    assert_eq!(
        get(plain_addr, "blog.localhost", "/.well-known/acme-challenge/tok-2").status,
        301
    );
    assert_eq!(
        get(plain_addr, "new.example", "/.well-known/acme-challenge/tok-1").status,
        404
    );
    let (mut c, _) = tls_client(tls_addr, "blog.localhost");
    assert_eq!(
        c.get("blog.localhost", "/.well-known/acme-challenge/tok-1").text(),
        "blog"
    );
    ch.remove("blog.localhost", "tok-1");
    assert_eq!(
        get(plain_addr, "blog.localhost", "/.well-known/acme-challenge/tok-1").status,
        301
    );
    router.shutdown();
}

#[test]
fn upgrade_over_tls_is_tunnelled() {
    use std::io::{Read, Write};
    let b = TestBackend::start(Arc::new(|_r: &SeenRequest, s: &mut TcpStream| {
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .is_ok()
    }));
    let secure = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = secure.local_addr().unwrap();
    let router = Router::new(RouterConfig::default(), Arc::new(NoWaker), Arc::new(NoAccessLog));
    let mut t = RouteTable::default();
    t.add(Route {
        app: "ws".into(),
        hosts: vec!["ws.localhost".into()],
        backends: vec![b.backend("g")],
        ..Route::default()
    });
    router.set_routes(t);
    router.serve_https(secure, Arc::new(CertStore::new())).unwrap();
    let (mut c, _) = tls_client(addr, "ws.localhost");
    c.send(b"GET / HTTP/1.1\r\nHost: ws.localhost\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(c.read_response(true).status, 101);
    for msg in [&b"one"[..], b"two-two"] {
        c.r.get_mut().write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        c.r.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
    router.shutdown();
}
