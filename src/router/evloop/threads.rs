//! A few blocking threads that take the connections the event loops hand over; they linger a while,
//! then exit.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long an idle connection thread waits for more work before it exits.
const LINGER: Duration = Duration::from_secs(10);

/// A few blocking threads that take jobs the loops hand over; they linger a while, then exit.
pub(super) struct Threads {
    q: Mutex<(VecDeque<Job>, usize)>,
    cv: Condvar,
    stack: usize,
}

pub(super) type Job = Box<dyn FnOnce() + Send>;

impl Threads {
    pub fn new(stack: usize) -> Threads {
        Threads {
            q: Mutex::new((VecDeque::new(), 0)),
            cv: Condvar::new(),
            stack,
        }
    }

    /// Runs `job` on an idle thread, or on a new one when every thread is busy (a job may run for as
    /// long as a WebSocket stays open, so jobs never wait for each other).
    pub fn submit(self: &Arc<Self>, job: Job) {
        let mut g = self.q.lock().unwrap_or_else(|e| e.into_inner());
        g.0.push_back(job);
        if g.0.len() <= g.1 {
            drop(g);
            self.cv.notify_one();
            return;
        }
        drop(g);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("router-conn".into())
            .stack_size(self.stack)
            .spawn(move || me.work());
        if spawned.is_err() {
            // Out of threads: an existing one takes it when free.
            self.cv.notify_one();
        }
    }

    fn work(&self) {
        let mut g = self.q.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = g.0.pop_front() {
                drop(g);
                job();
                g = self.q.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g.1 += 1;
            let (ng, t) = self.cv.wait_timeout(g, LINGER).unwrap_or_else(|e| e.into_inner());
            g = ng;
            g.1 -= 1;
            if t.timed_out() && g.0.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    #[test]
    fn threads_never_queue_a_job_behind_a_long_one() {
        let t = Arc::new(Threads::new(64 * 1024));
        let (tx, rx) = std::sync::mpsc::channel();
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        let ran = Arc::new(AtomicUsize::new(0));
        // Five jobs that block until released: each must get its own thread.
        for _ in 0..5 {
            let (release, ran, tx) = (release.clone(), ran.clone(), tx.clone());
            t.submit(Box::new(move || {
                ran.fetch_add(1, Relaxed);
                let _ = tx.send(());
                let mut g = release.0.lock().unwrap();
                while !*g {
                    g = release.1.wait(g).unwrap();
                }
            }));
        }
        for _ in 0..5 {
            rx.recv_timeout(Duration::from_secs(5))
                .expect("a job waited behind another");
        }
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
        // Idle threads are reused.
        std::thread::sleep(Duration::from_millis(50));
        let tx2 = tx.clone();
        t.submit(Box::new(move || {
            let _ = tx2.send(());
        }));
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(ran.load(Relaxed), 5);
    }
}
