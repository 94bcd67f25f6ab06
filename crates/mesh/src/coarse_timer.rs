//! A coarse timer for the per-request deadlines of the L7 data path.
//!
//! Owns: `CoarseTimer` and its `CoarseSleep` futures, which fire at most one `TICK` after
//! their deadline, and the sweeper loop that fires them.
//!
//! Why: the request-head deadline (hyper's `header_read_timeout`) and the upstream
//! timeout are armed on every request and almost never fire. On tokio's timer each one
//! is a timer-wheel insert, and when the wheel was empty the insert also wakes the
//! runtime's driver through an eventfd write: measured, one extra syscall per proxied
//! request, a fifth of the proxy's syscalls. Here arming a deadline is a push onto a
//! list; one sweeper task walks the list every `TICK` and wakes what expired. Being up to
//! `TICK` late on deadlines of seconds does not matter.
//!
//! Does not know: what the deadlines are for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often the sweeper runs, and so the most a deadline fires late.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// A cheap handle; clones share one list of pending sleeps.
#[derive(Clone, Default)]
pub(crate) struct CoarseTimer {
    shared: Arc<TimerShared>,
}

#[derive(Default)]
struct TimerShared {
    /// Sleeps that were polled and not yet fired. Weak, so a dropped sleep (the common
    /// case: the request finished first) costs nothing but a slot until the next sweep.
    pending: Mutex<Vec<Weak<SleepState>>>,
}

struct SleepState {
    deadline: Instant,
    waker: Mutex<Option<Waker>>,
}

/// Resolves once its deadline has passed (checked against the clock on every poll, so it
/// is never early; the sweeper only bounds how late the wake-up is).
pub(crate) struct CoarseSleep {
    state: Arc<SleepState>,
    timer: Arc<TimerShared>,
    registered: bool,
}

impl CoarseTimer {
    pub(crate) fn sleep_until(&self, deadline: Instant) -> CoarseSleep {
        CoarseSleep {
            state: Arc::new(SleepState {
                deadline,
                waker: Mutex::new(None),
            }),
            timer: Arc::clone(&self.shared),
            registered: false,
        }
    }

    pub(crate) fn sleep(&self, duration: Duration) -> CoarseSleep {
        self.sleep_until(Instant::now() + duration)
    }

    /// Wakes expired sleeps every `TICK` until `shutdown` fires.
    pub(crate) async fn run_sweeper(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => self.sweep(Instant::now()),
            }
        }
    }

    fn sweep(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.retain(|weak| match weak.upgrade() {
                None => false,
                Some(state) if state.deadline <= now => {
                    expired.push(state);
                    false
                }
                Some(_) => true,
            });
        }
        // Wake outside the list lock: a woken task may arm a new sleep at once.
        for state in expired {
            let waker = state
                .waker
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.state.deadline {
            return Poll::Ready(());
        }
        {
            let mut waker = this
                .state
                .waker
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match waker.as_ref() {
                Some(current) if current.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        if !this.registered {
            this.registered = true;
            this.timer
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(Arc::downgrade(&this.state));
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseTimer::sleep(self, duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseTimer::sleep_until(self, deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_after_the_deadline_not_before() {
        let timer = CoarseTimer::default();
        let sweeper = CancellationToken::new();
        tokio::spawn(timer.clone().run_sweeper(sweeper.clone()));
        let started = Instant::now();
        timer.sleep(Duration::from_millis(120)).await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(120), "{elapsed:?}");
        assert!(
            elapsed < Duration::from_millis(120) + TICK * 4,
            "{elapsed:?}"
        );
        sweeper.cancel();
    }

    #[test]
    fn dropped_sleeps_leave_the_list_on_the_next_sweep() {
        let timer = CoarseTimer::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut sleep = Box::pin(timer.sleep(Duration::from_secs(60)));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timer.shared.pending.lock().unwrap().len(), 1);
        drop(sleep);
        timer.sweep(Instant::now());
        assert!(timer.shared.pending.lock().unwrap().is_empty());
    }
}
