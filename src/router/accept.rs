//! Accepting client connections: the admission both engines use (the connection cap), and the threads of
//! TLS connections (plain HTTP goes to `evloop`), leader/followers style: idle connection threads block in accept(2) on the
//! shared listener (the kernel wakes one per connection), serve what they accept themselves, and go back
//! to accepting. A thread that accepts while no other is waiting first starts another, so one always
//! waits; threads idle longer than the linger exit (but never the last one). No hand-off between threads.

use super::blocking::serve_tls_connection;
use super::pages;
use super::shared::Inner;
use super::stream::send_nb;
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::TimeVal;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a connection thread waits in accept for more work before it exits.
const LINGER: Duration = Duration::from_secs(10);

/// A listener and the count of its threads waiting in accept.
struct Shared {
    inner: Arc<Inner>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    waiting: AtomicUsize,
}

/// Starts serving `listener`; the handle is the first connection thread's.
pub(super) fn serve(inner: Arc<Inner>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> JoinHandle<()> {
    // accept(2) honours SO_RCVTIMEO: that is how idle threads notice their linger is over.
    let secs = LINGER.as_secs() as i64;
    let _ = setsockopt(&listener, ReceiveTimeout, &TimeVal::new(secs, 0));
    let shared = Arc::new(Shared {
        inner,
        listener,
        tls,
        waiting: AtomicUsize::new(1),
    });
    spawn(shared).expect("cannot start the router's first connection thread")
}

fn spawn(shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    let stack = shared.inner.cfg.thread_stack;
    std::thread::Builder::new()
        .name("router-conn".into())
        .stack_size(stack)
        .spawn(move || run(&shared))
}

/// Counts a newly accepted client connection from `ip` as active, or, over the cap (all
/// connections, or this address's), answers it with a 503 and counts it as rejected (the caller
/// closes it). True: serve it, and uncount it when it ends ([`release`]).
pub(super) fn admit(inner: &Inner, stream: &TcpStream, ip: IpAddr) -> bool {
    let m = &inner.metrics;
    m.connections_total.fetch_add(1, Relaxed);
    let active = m.active_connections.fetch_add(1, Relaxed) + 1;
    let over_all = active as usize > inner.cfg.max_connections;
    if over_all || !inner.take_ip_slot(ip) {
        m.rejected_connections.fetch_add(1, Relaxed);
        m.active_connections.fetch_sub(1, Relaxed);
        let _ = send_nb(stream, pages::OVER_CAPACITY);
        inner.log_cap(|| match over_all {
            true => format!(
                "{} client connections open (max_connections): answering new ones 503",
                inner.cfg.max_connections
            ),
            false => format!(
                "client {ip} has {} connections open (router.max_connections_per_ip): answering its new ones 503",
                inner.cfg.max_connections_per_ip
            ),
        });
        return false;
    }
    true
}

/// Uncounts a connection [`admit`] counted.
pub(super) fn release(inner: &Inner, ip: IpAddr) {
    inner.metrics.active_connections.fetch_sub(1, Relaxed);
    inner.release_ip_slot(ip);
}

/// After accept(2) failed: out of descriptors, back off instead of spinning (the cap normally prevents
/// this).
pub(super) fn back_off(e: &std::io::Error) {
    if matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOMEM)
    ) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Uncounts the connection when it ends, however it ends.
struct ActiveGuard<'a>(&'a Inner, IpAddr);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        release(self.0, self.1);
    }
}

/// One connection thread: accept, serve, repeat. `waiting` counts this thread while it is in accept.
fn run(shared: &Arc<Shared>) {
    let inner = &*shared.inner;
    loop {
        let (stream, peer) = match shared.listener.accept() {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                // Lingered long enough: leave, unless this is the last thread waiting.
                let last = shared
                    .waiting
                    .fetch_update(SeqCst, SeqCst, |w| (w > 1).then(|| w - 1))
                    .is_err();
                if !last || inner.is_stopping() {
                    return;
                }
                continue;
            }
            Err(e) => {
                back_off(&e);
                continue;
            }
        };
        if inner.is_stopping() {
            shared.waiting.fetch_sub(1, SeqCst);
            return;
        }
        // This thread is busy now: make sure another one waits for the next connection.
        if shared.waiting.fetch_sub(1, SeqCst) == 1 {
            shared.waiting.fetch_add(1, SeqCst);
            if spawn(shared.clone()).is_err() {
                shared.waiting.fetch_sub(1, SeqCst);
            }
        }
        if admit(inner, &stream, peer.ip()) {
            let guard = ActiveGuard(inner, peer.ip());
            serve_tls_connection(&shared.inner, stream, shared.tls.clone());
            drop(guard);
        }
        shared.waiting.fetch_add(1, SeqCst);
    }
}
