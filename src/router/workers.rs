//! Connection threads: one per open connection, reused for a later connection after theirs ends (each
//! lingers a few seconds), so clients that open a connection per request do not pay for a thread spawn.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Work for a connection thread: serve one connection.
pub type Job = Box<dyn FnOnce() + Send>;

/// Threads that serve connections, spawned on demand and kept idle for `linger`.
pub struct Workers {
    queue: Mutex<Queue>,
    ready: Condvar,
    linger: Duration,
    stack: usize,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job. Changed only under the lock, so a job is queued only for a thread that
    /// will take it.
    idle: usize,
}

impl Workers {
    /// No threads yet; each gets `stack` bytes of stack and waits `linger` for more work before exiting.
    pub fn new(stack: usize, linger: Duration) -> Arc<Self> {
        Arc::new(Workers {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                idle: 0,
            }),
            ready: Condvar::new(),
            linger,
            stack,
        })
    }

    /// Runs `job` on an idle thread, or on a new one. Err: no thread could be started (the job is dropped).
    pub fn run(self: &Arc<Self>, job: Job) -> std::io::Result<()> {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.idle > q.jobs.len() {
                q.jobs.push_back(job);
                drop(q);
                self.ready.notify_one();
                return Ok(());
            }
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("router-conn".into())
            .stack_size(self.stack)
            .spawn(move || me.work(job))
            .map(|_| ())
    }

    fn work(&self, first: Job) {
        let mut job = first;
        loop {
            job();
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.idle += 1;
            let deadline = Instant::now() + self.linger;
            let next = loop {
                if let Some(j) = q.jobs.pop_front() {
                    break Some(j);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break None;
                }
                q = self.ready.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
            };
            q.idle -= 1;
            match next {
                Some(j) => job = j,
                None => return,
            }
        }
    }

    /// Threads waiting for work now.
    pub fn idle(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn threads_are_reused_then_exit() {
        let w = Workers::new(128 * 1024, Duration::from_millis(300));
        let ids = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..20 {
            let (ids2, done2) = (ids.clone(), done.clone());
            w.run(Box::new(move || {
                ids2.lock().unwrap().insert(std::thread::current().id());
                done2.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
            // Sequential connections: the previous thread is idle by now.
            while done.load(Ordering::SeqCst) <= i || w.idle() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert_eq!(ids.lock().unwrap().len(), 1, "one thread served all sequential jobs");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(w.idle(), 0, "idle threads exit after lingering");
    }
}
