//! The in-process event hub: every relayed event (id set), in order per
//! organization, fanned out to whoever on this replica follows changes
//! (watchers). Fed by the relay when events stay in process, or by this
//! replica's NATS subscription when `--nats-url` is set (see
//! [`crate::relay`]), so every replica's hub sees every replica's events.
//!
//! Each organization has its own channel, made when its first watcher
//! subscribes and dropped with its last one, so a watcher is woken only by
//! its organization's events and ten thousand idle watchers cost no work
//! per event of another organization.
//!
//! Every channel is bounded: a receiver that falls more than the hub's
//! capacity behind gets `RecvError::Lagged` on its next `recv` and has
//! lost events. It must then resume from the outbox table (the events
//! after the last id it saw) before following the hub again; the hub never
//! holds more than its capacity per organization, however slow a receiver.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::events::Event;

/// An organization's delivery state.
#[derive(Default)]
struct Org {
    /// The highest id delivered, so an event delivered again (a republish
    /// after a relay restart reaches core NATS subscribers even when
    /// JetStream drops it) is not delivered twice.
    last: u64,
    /// Its watchers' channel, while it has watchers.
    tx: Option<broadcast::Sender<Arc<Event>>>,
}

/// The hub. Cheap to clone; clones share the channels.
#[derive(Clone)]
pub struct Bus {
    /// Keyed by `Event.organization` (`organizations/{org}`).
    orgs: Arc<std::sync::Mutex<HashMap<String, Org>>>,
    capacity: usize,
    /// Cancelled when the server stops, so watchers end (telling their
    /// clients where to resume) instead of holding the drain open.
    closing: CancellationToken,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(Self::CAPACITY)
    }
}

impl Bus {
    /// Events a receiver may fall behind before it lags.
    pub const CAPACITY: usize = 1024;

    /// A hub buffering `capacity` events (at least 1) per organization.
    pub fn new(capacity: usize) -> Self {
        Self {
            orgs: Arc::default(),
            capacity: capacity.max(1),
            closing: CancellationToken::new(),
        }
    }

    fn orgs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Org>> {
        self.orgs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of every event of `organization` (`organizations/{org}`)
    /// published from now on. On `RecvError::Lagged` it has missed events:
    /// resume from the table (see the module doc).
    pub fn subscribe(&self, organization: &str) -> broadcast::Receiver<Arc<Event>> {
        let mut orgs = self.orgs();
        let org = orgs.entry(organization.to_owned()).or_default();
        match &org.tx {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(self.capacity);
                org.tx = Some(tx);
                rx
            }
        }
    }

    /// Delivers `event` to its organization's receivers, unless an event
    /// of its organization with this id or a later one was already
    /// delivered. Returns whether it was delivered.
    pub(crate) fn publish(&self, event: Arc<Event>) -> bool {
        let mut orgs = self.orgs();
        let org = orgs.entry(event.organization.clone()).or_default();
        if event.id <= org.last {
            return false;
        }
        org.last = event.id;
        if let Some(tx) = &org.tx {
            if tx.receiver_count() == 0 {
                // Its last watcher left: free the buffer.
                org.tx = None;
            } else {
                let _ = tx.send(event);
            }
        }
        true
    }

    /// Ends every watcher: the server is stopping.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Cancelled when the server stops ([`Bus::close`]).
    pub fn closing(&self) -> CancellationToken {
        self.closing.child_token()
    }

    /// Closes every organization's channel: the hub missed events (NATS
    /// was out of reach), so its watchers, seeing their channel closed,
    /// subscribe again and replay from the table what they missed.
    pub fn resync(&self) {
        for org in self.orgs().values_mut() {
            org.tx = None;
        }
    }

    /// Whether [`Bus::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closing.is_cancelled()
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
        let mut rx = bus.subscribe("organizations/a");
        let mut other = bus.subscribe("organizations/b");
        assert!(bus.publish(event("a", 1)));
        assert!(bus.publish(event("b", 2)));
        assert!(bus.publish(event("a", 3)));
        // A republish of an event already delivered, and an older one.
        assert!(!bus.publish(event("a", 3)));
        assert!(!bus.publish(event("a", 1)));
        // Another organization's order is its own.
        assert!(bus.publish(event("b", 4)));
        let drain = |rx: &mut broadcast::Receiver<Arc<Event>>| {
            let mut got = Vec::new();
            while let Ok(e) = rx.try_recv() {
                got.push((e.organization.clone(), e.id));
            }
            got
        };
        // Each receiver sees its own organization's events only.
        assert_eq!(
            drain(&mut rx),
            [
                ("organizations/a".to_owned(), 1),
                ("organizations/a".to_owned(), 3)
            ]
        );
        assert_eq!(
            drain(&mut other),
            [
                ("organizations/b".to_owned(), 2),
                ("organizations/b".to_owned(), 4)
            ]
        );
    }

    #[tokio::test]
    async fn a_slow_receiver_lags_instead_of_growing() {
        let bus = Bus::new(4);
        let mut rx = bus.subscribe("organizations/a");
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

    #[tokio::test]
    async fn a_resync_closes_the_channels() {
        let bus = Bus::new(4);
        let mut rx = bus.subscribe("organizations/a");
        bus.resync();
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        let mut rx = bus.subscribe("organizations/a");
        assert!(bus.publish(event("a", 1)));
        assert_eq!(rx.recv().await.unwrap().id, 1);
    }

    #[tokio::test]
    async fn an_organization_without_watchers_holds_no_buffer() {
        let bus = Bus::new(4);
        let rx = bus.subscribe("organizations/a");
        drop(rx);
        assert!(bus.publish(event("a", 1)));
        assert!(bus.orgs()["organizations/a"].tx.is_none());
        // A new watcher gets a new channel and what follows.
        let mut rx = bus.subscribe("organizations/a");
        assert!(bus.publish(event("a", 2)));
        assert_eq!(rx.recv().await.unwrap().id, 2);
    }
}
