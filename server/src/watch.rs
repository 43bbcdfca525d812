//! Watchers: the stream behind `EventService.WatchEvents`.
//!
//! A watcher subscribes to its organization's channel on the hub first,
//! then replays from the outbox table the events after its cursor, page by
//! page, then follows the hub. Subscribing first closes the gap between
//! the two: an event committed during the replay is either in a later
//! page or waiting in the channel, and the hub's events at or below the
//! cursor are dropped, so none is missed or seen twice. Ids follow commit
//! order within an organization (see [`crate::events`]), which is why a
//! watch covers one organization.
//!
//! Nothing is buffered per watcher: the stream is pulled, one event at a
//! time, as fast as the transport drains it, so a client that stops
//! reading stops the pulling (HTTP/2 flow control) and holds only its
//! place in the hub's shared, bounded channel. When it falls further
//! behind than the channel holds, it is ended with [`End::FellBehind`] and
//! its cursor; a watcher that lags right after its replay (which may take
//! long) replays once more instead. When the hub itself missed events (its
//! NATS subscription was cut, see [`Bus::resync`]) it closes the channels,
//! and every watcher subscribes again and replays what it missed.
//!
//! Access is checked when the watch opens and again every [`RECHECK`]
//! (`Config::watch_recheck`): the caller's credential is resolved anew (from the caches
//! the bus keeps current), so a watch whose key is revoked, whose token
//! expired or whose principal lost its role ends with the refusal a new
//! call would get.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures::Stream;
use tokio::{
    sync::broadcast::{Receiver, error::RecvError},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    bus::Bus,
    domain::{Error, filter::Predicate, page::PageRequest},
    events::Event,
    layers::{authenticate::Credentials, authorize::Caller},
    store::{Store, outbox::event_matches},
};

/// Events read from the table per replay query.
const REPLAY_PAGE: usize = 500;

/// How often a watch checks that its caller may still read, by default.
pub const RECHECK: Duration = Duration::from_secs(10);

/// What a watch needs to check its caller again.
pub struct Access {
    /// Resolves the credential.
    pub credentials: Credentials,
    /// The credential the watch was opened with.
    pub credential: String,
    /// The permit it was opened with.
    pub caller: Caller,
    /// How often to check.
    pub every: Duration,
}

impl Access {
    /// Whether the credential still resolves to a principal that may read
    /// `org`; the refusal a new call would get otherwise.
    async fn check(&self, org: &str) -> Result<(), Error> {
        let principal = self.credentials.resolve(&self.credential).await?;
        self.caller.with_principal(principal).authorize(org)?;
        Ok(())
    }
}

/// Why a watch ended before the client left; each carries the cursor to
/// resume from (the id of the last event sent).
#[derive(Debug, thiserror::Error)]
pub enum End {
    /// The client read too slowly: the hub no longer holds the events it
    /// has not read.
    #[error(
        "the watcher fell behind and events were no longer held for it; \
         resume with cursor {cursor}"
    )]
    FellBehind {
        /// Where to resume.
        cursor: u64,
    },
    /// The server is stopping.
    #[error("the server is shutting down; resume with cursor {cursor} on another replica")]
    ShuttingDown {
        /// Where to resume.
        cursor: u64,
    },
    /// Reading the table failed, or the caller may no longer read.
    #[error(transparent)]
    Error(#[from] Error),
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the events committed from now on.
    Now,
    /// With the events after this id (0: every retained event).
    After(u64),
}

impl Start {
    /// Reads `WatchEventsRequest.cursor`.
    pub fn parse(field: &str, cursor: &str) -> Result<Self, Error> {
        if cursor.is_empty() {
            return Ok(Start::Now);
        }
        cursor.parse().map(Start::After).map_err(|_| {
            Error::invalid(
                field,
                "must be the id of the last event seen (digits), 0 for every retained \
                 event, or empty for the events from now on",
            )
        })
    }
}

/// One watch's state, advanced by [`Watch::next`].
pub struct Watch {
    store: Store,
    bus: Bus,
    /// The organization's id, as the table keys it.
    org: String,
    filter: Vec<Predicate>,
    /// The id of the last event sent (or of the starting point).
    cursor: u64,
    rx: Receiver<Arc<Event>>,
    closing: CancellationToken,
    /// Replayed events not sent yet.
    page: VecDeque<Event>,
    /// Whether the table may hold events after `cursor` not yet read.
    replaying: bool,
    /// Whether the hub delivered since the last replay: a lag before that
    /// may be the replay's doing, after it it is the client's.
    live: bool,
    /// Replays started by a lag since the hub last delivered.
    lag_replays: u8,
    access: Access,
    /// When [`Access::check`] runs next.
    next_check: Instant,
    done: bool,
    _gauge: WatcherGauge,
}

impl Watch {
    /// Starts watching `org`'s events that pass `filter`.
    pub async fn start(
        store: Store,
        bus: &Bus,
        access: Access,
        org: String,
        filter: Vec<Predicate>,
        start: Start,
    ) -> Result<Self, Error> {
        // Subscribed before anything is read: see the module doc.
        let rx = bus.subscribe(&format!("organizations/{org}"));
        let (cursor, replaying) = match start {
            Start::After(id) => (id, true),
            // The latest event committed now: every later one commits
            // after the subscription, so it arrives through the hub.
            Start::Now => (store.latest_event_id(&org).await?, false),
        };
        Ok(Self {
            store,
            bus: bus.clone(),
            org,
            filter,
            cursor,
            rx,
            closing: bus.closing(),
            page: VecDeque::new(),
            replaying,
            live: false,
            lag_replays: 0,
            next_check: Instant::now() + access.every,
            access,
            done: false,
            _gauge: WatcherGauge::open(),
        })
    }

    /// The stream of events, ending with the [`End`] that stopped it.
    pub fn into_stream(self) -> impl Stream<Item = Result<Event, End>> + Send + 'static {
        futures::stream::unfold(self, |mut watch| async move {
            let item = watch.next().await?;
            Some((item, watch))
        })
    }

    /// The next event, the end that stopped the watch, or `None` after it.
    pub async fn next(&mut self) -> Option<Result<Event, End>> {
        if self.done {
            return None;
        }
        let item = self.advance().await;
        match &item {
            Ok(event) => self.cursor = event.id,
            Err(_) => self.done = true,
        }
        Some(item)
    }

    async fn advance(&mut self) -> Result<Event, End> {
        loop {
            if Instant::now() >= self.next_check {
                self.access.check(&self.org).await?;
                self.next_check = Instant::now() + self.access.every;
            }
            if let Some(event) = self.page.pop_front() {
                return Ok(event);
            }
            if self.replaying {
                self.replay_page().await?;
                continue;
            }
            let received = tokio::select! {
                biased;
                () = self.closing.cancelled() => {
                    return Err(End::ShuttingDown { cursor: self.cursor });
                }
                () = tokio::time::sleep_until(self.next_check) => continue,
                received = self.rx.recv() => received,
            };
            match received {
                Ok(event) => {
                    self.live = true;
                    self.lag_replays = 0;
                    if event.id > self.cursor && event_matches(&self.filter, &event) {
                        return Ok(Event::clone(&event));
                    }
                }
                Err(RecvError::Lagged(_)) if !self.live && self.lag_replays == 0 => {
                    // Fell behind while replaying: replay the rest, once.
                    self.lag_replays += 1;
                    self.replaying = true;
                }
                Err(RecvError::Lagged(_)) => {
                    return Err(End::FellBehind {
                        cursor: self.cursor,
                    });
                }
                Err(RecvError::Closed) => {
                    // The hub missed events: follow it again, after
                    // replaying from the table.
                    self.rx = self.bus.subscribe(&format!("organizations/{}", self.org));
                    self.replaying = true;
                }
            }
        }
    }

    /// Reads the next page after the cursor; the last one ends the replay.
    async fn replay_page(&mut self) -> Result<(), End> {
        let page = PageRequest::after_key(REPLAY_PAGE, Some(self.cursor.to_string()));
        let (events, next) = tokio::select! {
            biased;
            () = self.closing.cancelled() => {
                return Err(End::ShuttingDown { cursor: self.cursor });
            }
            read = self.store.list_events(Some(self.org.clone()), self.filter.clone(), page) => read?,
        };
        if next.is_empty() {
            self.replaying = false;
            self.live = false;
        }
        self.page = events.into();
        Ok(())
    }
}

/// Counts open watchers in `tollgate_watchers`.
struct WatcherGauge;

impl WatcherGauge {
    fn open() -> Self {
        metrics::gauge!("tollgate_watchers").increment(1.0);
        WatcherGauge
    }
}

impl Drop for WatcherGauge {
    fn drop(&mut self) {
        metrics::gauge!("tollgate_watchers").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cursor() {
        assert_eq!(Start::parse("cursor", "").unwrap(), Start::Now);
        assert_eq!(Start::parse("cursor", "0").unwrap(), Start::After(0));
        assert_eq!(Start::parse("cursor", "42").unwrap(), Start::After(42));
        for bad in ["-1", "x", "1.5", " 1", "18446744073709551616"] {
            assert!(
                matches!(Start::parse("cursor", bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}
