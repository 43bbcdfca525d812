//! Telling which of a task's futures woke it.
//!
//! A connection task waits on its connection and on three quiet futures:
//! the two shutdown tokens and its timer. `tokio::select!` polls every
//! branch on every wake, and the connection wakes the task for nearly
//! every request: each token's check takes two locks (its node's and its
//! `Notify`'s) and the timer registers its waker again, some 400
//! instructions a call for futures that fire a few times in the
//! connection's life. The quiet futures are polled with [`Quiet`]'s waker
//! instead, which notes that one of them woke the task before waking it,
//! so the task polls them again only then. hyper's keep-alive timer is
//! such a future too (see `clock::QuietSleep`). Written here because no crate
//! offers this narrow piece (`futures`' `FuturesUnordered` does the same
//! for futures of one type, with an allocation each).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Wake, Waker},
};

use futures::task::AtomicWaker;

/// The waker the quiet futures get, and whether it was woken.
#[derive(Debug)]
pub(crate) struct Quiet {
    shared: Arc<Shared>,
    waker: Waker,
}

#[derive(Debug)]
struct Shared {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before waking, so the task sees it when it runs.
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Quiet {
    /// Starts as woken: the quiet futures have not been polled yet.
    pub(crate) fn new() -> Self {
        let shared = Arc::new(Shared {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(shared.clone());
        Self { shared, waker }
    }

    /// Whether the quiet futures need polling: one of them woke the task
    /// since the last call, or [`Quiet::touch`] asked for it. Also records
    /// the task's current waker, for them to wake.
    pub(crate) fn take(&self, cx: &Context<'_>) -> bool {
        self.shared.task.register(cx.waker());
        self.shared.woken.swap(false, Ordering::AcqRel)
    }

    /// Asks for the quiet futures to be polled on the next pass (after one
    /// of them was replaced or reset).
    pub(crate) fn touch(&self) {
        self.shared.woken.store(true, Ordering::Release);
    }

    /// The context to poll the quiet futures with.
    pub(crate) fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::Future,
        pin::pin,
        task::Poll,
        time::{Duration, Instant},
    };

    use tokio_util::sync::CancellationToken;

    use super::*;

    #[tokio::test]
    async fn polls_again_only_after_a_quiet_future_woke_the_task() {
        let token = CancellationToken::new();
        let mut cancelled = pin!(token.cancelled());
        let quiet = Quiet::new();
        let mut passes = 0;
        std::future::poll_fn(|cx| {
            assert!(quiet.take(cx), "the first pass polls");
            assert!(cancelled.as_mut().poll(&mut quiet.context()).is_pending());
            Poll::Ready(())
        })
        .await;
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            canceller.cancel();
        });
        let started = Instant::now();
        std::future::poll_fn(|cx| {
            passes += 1;
            if !quiet.take(cx) {
                // Woken by something else: nothing to poll.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match cancelled.as_mut().poll(&mut quiet.context()) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        assert!(token.is_cancelled());
        assert!(started.elapsed() >= Duration::from_millis(15));
        assert!(passes > 1, "woken by the cancellation, not polled once");
        // Nothing woke it since.
        std::future::poll_fn(|cx| {
            assert!(!quiet.take(cx));
            quiet.touch();
            assert!(quiet.take(cx), "touch asks for a poll");
            Poll::Ready(())
        })
        .await;
    }
}
