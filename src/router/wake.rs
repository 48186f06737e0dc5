//! Waking an app that has no backend (idle or stopped): requests are held while the integrator's
//! [`Waker`] starts it, and concurrent requests for the same app share one wake.

use super::route::Backend;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What waking an app gave.
#[derive(Debug, Clone)]
pub enum WakeResult {
    /// The app answers now at these backends.
    Ready(Vec<Backend>),
    /// The app is stopped and is not to be woken: 502.
    NotRunning,
    /// It did not come up in time: 503.
    TimedOut,
}

/// Called when a request reaches an app with no backend; the request is held until it returns.
/// Concurrent requests for the same app share one call.
pub trait Waker: Send + Sync {
    /// Starts `app` and returns its backends once it answers, giving up at `deadline`.
    fn wake(&self, app: &str, deadline: Instant) -> WakeResult;
}

/// One in-progress wake shared by the requests waiting for it.
#[derive(Default)]
struct WakeSlot {
    result: Mutex<Option<WakeResult>>,
    done: Condvar,
}

/// The integrator's [`Waker`] and the wakes in progress, by app.
pub(crate) struct Wakes {
    waker: Arc<dyn Waker>,
    slots: Mutex<HashMap<String, Arc<WakeSlot>>>,
}

impl Wakes {
    pub fn new(waker: Arc<dyn Waker>) -> Wakes {
        Wakes {
            waker,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Wakes `app`, sharing one [`Waker::wake`] call among concurrent requests; gives up after `timeout`.
    pub fn wake(&self, app: &str, timeout: Duration) -> WakeResult {
        let deadline = Instant::now() + timeout;
        let (slot, leader) = {
            let mut w = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match w.get(app) {
                Some(s) => (s.clone(), false),
                None => {
                    let s = Arc::new(WakeSlot::default());
                    w.insert(app.to_string(), s.clone());
                    (s, true)
                }
            }
        };
        if leader {
            /// Ends the shared wake even if the waker panics, so later requests start a new one.
            struct Finish<'a>(&'a Wakes, &'a str, &'a WakeSlot, Option<WakeResult>);
            impl Drop for Finish<'_> {
                fn drop(&mut self) {
                    self.0.slots.lock().unwrap_or_else(|e| e.into_inner()).remove(self.1);
                    *self.2.result.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(self.3.take().unwrap_or(WakeResult::TimedOut));
                    self.2.done.notify_all();
                }
            }
            let mut finish = Finish(self, app, &slot, None);
            let r = self.waker.wake(app, deadline);
            finish.3 = Some(r.clone());
            return r;
        }
        let mut res = slot.result.lock().unwrap_or_else(|e| e.into_inner());
        while res.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return WakeResult::TimedOut;
            }
            res = slot.done.wait_timeout(res, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        res.clone().unwrap_or(WakeResult::TimedOut)
    }
}
