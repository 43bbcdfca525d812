//! The in-process event hub: every relayed event (id set), in order per
//! organization, fanned out to whoever on this replica follows changes
//! (watchers, later). Fed by the relay when events stay in process, or by
//! this replica's NATS subscription when `--nats-url` is set (see
//! [`crate::relay`]), so every replica's hub sees every replica's events.
//!
//! The buffer is bounded: a receiver that falls more than
//! [`Bus::CAPACITY`] events behind gets `RecvError::Lagged` on its next
//! `recv` and has lost events. It must then resume from the outbox table
//! (the events after the last id it saw) before following the hub again;
//! the hub never holds more than its capacity, however slow a receiver.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::broadcast;

use crate::events::Event;

/// The hub. Cheap to clone; clones share one channel.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
    /// The highest id delivered per organization, so an event delivered
    /// again (a republish after a relay restart reaches core NATS
    /// subscribers even when JetStream drops it) is not delivered twice.
    last: Arc<std::sync::Mutex<HashMap<String, u64>>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(Self::CAPACITY)
    }
}

impl Bus {
    /// Events a receiver may fall behind before it lags.
    pub const CAPACITY: usize = 4096;

    /// A hub buffering `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            last: Arc::default(),
        }
    }

    /// A receiver of every event published from now on. On
    /// `RecvError::Lagged` it has missed events: resume from the table
    /// (see the module doc).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Delivers `event` to every receiver, unless an event of its
    /// organization with this id or a later one was already delivered.
    /// Returns whether it was delivered.
    pub(crate) fn publish(&self, event: Arc<Event>) -> bool {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let seen = last.entry(event.organization.clone()).or_insert(0);
            if event.id <= *seen {
                return false;
            }
            *seen = event.id;
        }
        // No receiver is not an error: nobody follows yet.
        let _ = self.tx.send(event);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(org: &str, id: u64) -> Arc<Event> {
        Arc::new(Event {
            id,
            organization: format!("organizations/{org}"),
            r#type: "apiKey.revoked".into(),
            ..Event::default()
        })
    }

    #[tokio::test]
    async fn delivers_in_order_and_drops_what_was_delivered() {
        let bus = Bus::new(16);
        let mut rx = bus.subscribe();
        assert!(bus.publish(event("a", 1)));
        assert!(bus.publish(event("b", 2)));
        assert!(bus.publish(event("a", 3)));
        // A republish of an event already delivered, and an older one.
        assert!(!bus.publish(event("a", 3)));
        assert!(!bus.publish(event("a", 1)));
        // Another organization's order is its own.
        assert!(bus.publish(event("b", 4)));
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push((e.organization.clone(), e.id));
        }
        assert_eq!(
            got,
            [
                ("organizations/a".to_owned(), 1),
                ("organizations/b".to_owned(), 2),
                ("organizations/a".to_owned(), 3),
                ("organizations/b".to_owned(), 4),
            ]
        );
    }

    #[tokio::test]
    async fn a_slow_receiver_lags_instead_of_growing() {
        let bus = Bus::new(4);
        let mut rx = bus.subscribe();
        for id in 1..=10 {
            bus.publish(event("a", id));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("expected Lagged, got {other:?}"),
        }
        // After the lag it continues with the oldest event still held.
        assert_eq!(rx.recv().await.unwrap().id, 7);
    }
}
