//! Writing the counts: [`Usage::flush_now`] (one transaction per flush)
//! and [`Usage::run_flusher`], the task that calls it every interval, when
//! a shard fills up, and once more at shutdown.

use std::{sync::Arc, time::Duration};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Usage;
use crate::{domain::Result, store::Store};

impl Usage {
    /// Writes everything counted so far in one transaction: upserts adding
    /// to the stored minutes, and each used key's `last_used_time`.
    /// Returns the rows written. On failure the counts are kept, merged
    /// into the next flush (within the bound, see [`Usage::restore`]).
    ///
    /// One flush runs at a time: when this returns `Ok`, every call
    /// recorded before it was called is in the database (tests, shutdown).
    pub async fn flush_now(&self, store: &Store) -> Result<usize> {
        let _one_at_a_time = self.flush_lock().lock().await;
        let records = self.drain();
        if records.is_empty() {
            return Ok(0);
        }
        let rows = records.len();
        let batch = Arc::new(records);
        match store.write_usage(batch.clone()).await {
            Ok(()) => {
                metrics::counter!("tollgate_usage_flushes_total", "outcome" => "ok").increment(1);
                metrics::counter!("tollgate_usage_flushed_rows_total")
                    .increment(u64::try_from(rows).unwrap_or(u64::MAX));
                Ok(rows)
            }
            Err(e) => {
                metrics::counter!("tollgate_usage_flushes_total", "outcome" => "error")
                    .increment(1);
                // The write's closure is gone by now; clone only if not.
                let records = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
                self.restore(records);
                Err(e)
            }
        }
    }

    /// Flushes every `interval`, early when a shard fills up, and once more
    /// when `token` is cancelled. Cancel it after the listener drained, so
    /// the last calls are in the last flush; then await this task before
    /// closing the database.
    pub async fn run_flusher(self, store: Store, interval: Duration, token: CancellationToken) {
        // A zero period would panic; config validation refuses one anyway.
        let interval = interval.max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = ticks.tick() => {}
                () = self.flush_wanted().notified() => {}
            }
            if let Err(e) = self.flush_now(&store).await {
                tracing::warn!(
                    error = %e,
                    held_calls = self.held_calls(),
                    "usage flush failed; its counts are kept for the next one"
                );
            }
        }
        match self.flush_now(&store).await {
            Ok(rows) => tracing::debug!(rows, "last usage flush"),
            Err(e) => tracing::error!(
                error = %e,
                lost_calls = self.held_calls(),
                "the last usage flush failed; these calls are not counted"
            ),
        }
    }
}
