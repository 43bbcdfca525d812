//! Bounded, TTL-limited caches for the reads on every authenticated call:
//! API key by id, principal by name, organization by id; and OAuth client
//! by `client_id`, for the token and authorize endpoints. Invalidation is
//! one function, [`Caches::apply`], fed the events of each committed write:
//! the writing replica calls it after commit, and the event bus will call
//! it on every other replica. The TTL bounds staleness where no event
//! arrives.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry::{KeyValue, trace::TraceContextExt as _};

use super::{
    api_keys::ApiKeyRow, oauth_clients::OAuthClientRow, organizations::CachedOrganization,
    principals::PrincipalRecord, ttl_cache::TtlCache as Cache,
};
use crate::{
    domain::{
        api_key::StoredDigest,
        authz::Principal,
        names::{ApiKeyName, ClientName, OrgName, PrincipalKind, PrincipalName},
    },
    events::{Event, EventKind},
    striped::StripedCounter,
};

/// Sizes and TTL, from the server config.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Entries per cache.
    pub capacity: u64,
    /// Time to live of an entry.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            ttl: Duration::from_secs(30),
        }
    }
}

/// Key of the principal cache: (org, kind, id).
pub type PrincipalKey = (String, PrincipalKind, String);

/// The caches; see the module doc.
pub struct Caches {
    /// Organizations by id.
    pub orgs: Cache<String, Arc<CachedOrganization>>,
    /// Principals by (org, kind, id).
    pub principals: Cache<PrincipalKey, Arc<PrincipalRecord>>,
    /// `None` remembers that a key id does not exist, so a flood of made-up
    /// keys does not become a flood of queries.
    pub keys: Cache<String, Option<Arc<ApiKeyRow>>>,
    /// What a good key authenticated as, by key id: the key row and its
    /// (capped) principal, checked active in an active organization when
    /// cached. The hot path makes this one lookup instead of three (key,
    /// principal, organization); every event that could change the answer
    /// evicts the entries it touches.
    pub resolved: Cache<String, Arc<ResolvedKey>>,
    /// See [`Caches::epoch`].
    epoch: AtomicU64,
    /// Tells these caches' thread-local copies from another store's.
    id: u64,
    /// OAuth clients by `client_id` (their resource name); `None`
    /// remembers an unknown client, as for keys. Only the row: the
    /// organization's state comes from `orgs`, and secrets are checked
    /// against the row's digests on every call.
    pub clients: Cache<String, Option<Arc<OAuthClientRow>>>,
    /// Hits and misses of each cache (`tollgate_cache_lookups_total`).
    pub lookups: CacheLookups,
}

/// The hit and miss counters of one cache, registered once and striped
/// ([`StripedCounter`]), so a lookup adds to a line of its own thread's.
#[derive(Debug, Clone)]
pub struct Lookups {
    cache: &'static str,
    hit: Arc<StripedCounter>,
    miss: Arc<StripedCounter>,
}

impl Lookups {
    fn new(cache: &'static str) -> Self {
        Self {
            cache,
            hit: StripedCounter::new(
                metrics::counter!("tollgate_cache_lookups_total", "cache" => cache, "result" => "hit"),
            ),
            miss: StripedCounter::new(
                metrics::counter!("tollgate_cache_lookups_total", "cache" => cache, "result" => "miss"),
            ),
        }
    }

    /// Counts a lookup that found (`true`) or did not find its entry, and
    /// inside a recorded call notes it on the call's span as a
    /// `cache.lookup` event (`tollgate.cache.name`, `tollgate.cache.hit`).
    /// An event, not a span of its own: a lookup takes about 100 ns, and a
    /// span per lookup cost a cached call several times its own work to
    /// record and export (BENCHMARKS.md, "Traces").
    pub fn record(&self, hit: bool) {
        if hit {
            self.hit.increment(1);
        } else {
            self.miss.increment(1);
        }
        if crate::otel::enabled() {
            let cache = self.cache;
            opentelemetry::Context::map_current(|cx| {
                let span = cx.span();
                if span.is_recording() {
                    span.add_event(
                        "cache.lookup",
                        vec![
                            KeyValue::new("tollgate.cache.name", cache),
                            KeyValue::new("tollgate.cache.hit", hit),
                        ],
                    );
                }
            });
        }
    }
}

/// [`Lookups`] per cache.
#[derive(Debug, Clone)]
pub struct CacheLookups {
    /// `orgs`.
    pub orgs: Lookups,
    /// `principals`.
    pub principals: Lookups,
    /// `keys`.
    pub keys: Lookups,
    /// `resolved`.
    pub resolved: Lookups,
    /// `clients`.
    pub clients: Lookups,
}

/// What a cached key answers a call with: the calling thread's own copy
/// ([`Caches::resolved_answer`]).
#[derive(Debug, Clone)]
pub struct KeyAnswer {
    /// The key's digest, decoded; `None` when the stored one is malformed.
    pub digest: Option<StoredDigest>,
    /// When the key expires (microseconds since the epoch), if it does.
    pub expire_time: Option<i64>,
    /// The principal the key acts as. This thread's own allocation, so the
    /// call's clones of it count on a line no other core writes.
    pub principal: Arc<Principal>,
}

/// A thread's copy of a resolved key, valid while its caches' epoch and
/// the shared entry's deadline hold.
struct LocalKey {
    caches: u64,
    epoch: u64,
    expires: Instant,
    answer: KeyAnswer,
}

/// Resolved keys a thread has copied; emptied when it reaches this size.
const LOCAL_KEYS_MAX: usize = 1024;

thread_local! {
    /// Each thread's copies of the resolved keys its calls presented. A
    /// read from the shared cache takes its shard's read lock and clones
    /// the entry's reference counts, all writes to lines every core's
    /// calls share; with the same key on every core (one busy client) they
    /// went back and forth between the cores on every call. Keyed by key
    /// id, with the owning caches' id inside (tests run several stores in
    /// one process).
    static LOCAL_KEYS: RefCell<HashMap<String, LocalKey, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// Ids of [`Caches`], for the thread-local copies.
static CACHES_IDS: AtomicU64 = AtomicU64::new(0);

/// A key that authenticated, with what it authenticated as.
#[derive(Debug)]
pub struct ResolvedKey {
    /// The key row (digest, expiry, owner).
    pub row: Arc<ApiKeyRow>,
    /// The row's digest, decoded; `None` when the stored one is malformed.
    pub digest: Option<StoredDigest>,
    /// The principal the key acts as, after its role cap.
    pub principal: Arc<Principal>,
}

impl Caches {
    /// Empty caches sized by `c`.
    pub fn new(c: &CacheConfig) -> Self {
        Self {
            orgs: Cache::new(c.capacity, c.ttl),
            principals: Cache::new(c.capacity, c.ttl),
            keys: Cache::new(c.capacity, c.ttl),
            resolved: Cache::new(c.capacity, c.ttl),
            epoch: AtomicU64::new(0),
            id: CACHES_IDS.fetch_add(1, Ordering::Relaxed),
            clients: Cache::new(c.capacity, c.ttl),
            lookups: CacheLookups {
                orgs: Lookups::new("orgs"),
                principals: Lookups::new("principals"),
                keys: Lookups::new("keys"),
                resolved: Lookups::new("resolved"),
                clients: Lookups::new("clients"),
            },
        }
    }

    /// Forgets what `event` made stale. An event this version cannot read
    /// (a newer replica's) flushes everything: stale data is worse than a
    /// cold cache.
    pub fn apply(&self, event: &Event) {
        // Verified access tokens remember the epoch they were resolved in;
        // any change makes them resolve their principal again.
        self.bump();
        let Some(kind) = EventKind::parse(&event.r#type) else {
            tracing::warn!(r#type = %event.r#type, "unknown event type; flushing caches");
            self.flush();
            return;
        };
        let resource = &event.resource;
        let parsed = match kind {
            EventKind::OrganizationCreated => {
                OrgName::parse("resource", resource).map(|n| self.orgs.invalidate(&n.org))
            }
            EventKind::OrganizationUpdated | EventKind::OrganizationDeleted => {
                OrgName::parse("resource", resource).map(|n| self.invalidate_org(&n.org))
            }
            EventKind::UserCreated
            | EventKind::UserUpdated
            | EventKind::UserPasswordSet
            | EventKind::ServiceAccountCreated
            | EventKind::ServiceAccountUpdated => PrincipalName::parse_any("resource", resource)
                .map(|n| {
                    self.forget_principal(&n);
                    self.forget_resolved_of(&n);
                }),
            EventKind::UserDeleted | EventKind::ServiceAccountDeleted => {
                PrincipalName::parse_any("resource", resource).map(|n| {
                    self.forget_principal(&n);
                    self.forget_keys_of(&n);
                })
            }
            EventKind::ApiKeyCreated | EventKind::ApiKeyRevoked => {
                ApiKeyName::parse("resource", resource).map(|n| {
                    self.keys.invalidate(&n.key);
                    self.resolved.invalidate(&n.key);
                })
            }
            // Not cached here: the key ring reloads them itself.
            EventKind::SigningKeyCreated | EventKind::SigningKeyReplaced => Ok(()),
            // Not cached here: the rate-limit engine reloads every policy
            // on the store's change signal (`Store::subscribe_rate_limit_changes`).
            EventKind::RateLimitPolicyCreated
            | EventKind::RateLimitPolicyUpdated
            | EventKind::RateLimitPolicyDeleted => Ok(()),
            // Not cached here: the access-token verifier learns revoked
            // ids from `Store::subscribe_token_revocations`, and the bump
            // above makes verified tokens resolve again; refresh tokens
            // are read from the database on every use.
            EventKind::TokenRevoked => Ok(()),
            // Not cached: the relay reads an organization's webhooks in the
            // transaction that makes their deliveries.
            EventKind::WebhookCreated
            | EventKind::WebhookUpdated
            | EventKind::WebhookSecretRotated
            | EventKind::WebhookDeleted => Ok(()),
            EventKind::OAuthClientCreated
            | EventKind::OAuthClientUpdated
            | EventKind::OAuthClientDeleted
            | EventKind::OAuthClientSecretRotated => ClientName::parse("resource", resource)
                .map(|n| self.clients.invalidate(&n.to_string())),
        };
        if let Err(v) = parsed {
            tracing::warn!(%resource, error = %v.description, "unreadable event resource; flushing caches");
            self.flush();
        }
        // Again after the evictions: a thread-local copy made between the
        // first bump and an eviction carries this epoch's predecessor.
        self.bump();
    }

    /// Marks everything resolved before now as possibly stale (see
    /// [`Caches::epoch`]).
    pub fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// A counter that grows with every change applied: what was resolved
    /// under an older epoch must be resolved again. Cheaper than finding
    /// the entries a change touches, for caches keyed by something the
    /// change does not name (whole access tokens).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The answer cached for API key `key_id`: this thread's copy while
    /// no change was applied since it was made (the epoch) and the shared
    /// entry it copied lives; else a new copy of the shared entry. Every
    /// change bumps the epoch after evicting what it touched, so a copy
    /// made from an entry about to be evicted carries the older epoch.
    pub fn resolved_answer(&self, key_id: &str) -> Option<KeyAnswer> {
        let epoch = self.epoch();
        let now = Instant::now();
        let local = LOCAL_KEYS.with_borrow(|keys| {
            keys.get(key_id)
                .filter(|l| l.caches == self.id && l.epoch == epoch && l.expires > now)
                .map(|l| l.answer.clone())
        });
        if local.is_some() {
            return local;
        }
        let (shared, expires) = self.resolved.get_until(key_id, now)?;
        let answer = KeyAnswer {
            digest: shared.digest,
            expire_time: shared.row.expire_time,
            principal: Arc::new(Principal::clone(&shared.principal)),
        };
        LOCAL_KEYS.with_borrow_mut(|keys| {
            if keys.len() >= LOCAL_KEYS_MAX && !keys.contains_key(key_id) {
                keys.clear();
            }
            keys.insert(
                key_id.to_owned(),
                LocalKey {
                    caches: self.id,
                    epoch,
                    expires,
                    answer: answer.clone(),
                },
            );
        });
        Some(answer)
    }

    /// Forgets everything.
    pub fn flush(&self) {
        self.bump();
        self.orgs.invalidate_all();
        self.principals.invalidate_all();
        self.keys.invalidate_all();
        self.resolved.invalidate_all();
        self.clients.invalidate_all();
        self.bump();
    }

    fn forget_resolved_of(&self, name: &PrincipalName) {
        let kind = name.kind.code();
        self.resolved.invalidate_entries_if(|_, v| {
            v.row.org_id == name.org && v.row.owner_kind == kind && v.row.owner_id == name.id
        });
    }

    fn forget_principal(&self, name: &PrincipalName) {
        self.principals
            .invalidate(&(name.org.clone(), name.kind, name.id.clone()));
    }

    fn forget_keys_of(&self, name: &PrincipalName) {
        self.forget_resolved_of(name);
        let kind = name.kind.code();
        self.keys.invalidate_entries_if(|_, v| {
            v.as_ref().is_some_and(|k| {
                k.org_id == name.org && k.owner_kind == kind && k.owner_id == name.id
            })
        });
    }

    /// Forgets everything cached about an organization and its members.
    fn invalidate_org(&self, org: &str) {
        self.orgs.invalidate(org);
        self.resolved
            .invalidate_entries_if(|_, v| v.row.org_id == org);
        self.principals.invalidate_entries_if(|k, _| k.0 == org);
        self.keys
            .invalidate_entries_if(|_, v| v.as_ref().is_some_and(|k| k.org_id == org));
        // By key, so remembered unknown clients of the organization go too.
        let prefix = format!("organizations/{org}/clients/");
        self.clients
            .invalidate_entries_if(|k, _| k.starts_with(&prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::authz::Roles;

    fn resolved(caches: &Caches, key_id: &str) {
        let row = ApiKeyRow {
            org_id: "acme".into(),
            key_id: key_id.into(),
            owner_kind: PrincipalKind::ServiceAccount.code(),
            owner_id: "ci".into(),
            owner_uid: "u".into(),
            creator: "system".into(),
            role_cap: None,
            display_name: "k".into(),
            digest: "ab".repeat(32),
            state: 1,
            expire_time: None,
            create_time: 0,
            revoke_time: None,
            revision: 1,
            scopes: String::new(),
            last_used_time: None,
        };
        let principal = Principal::new(
            "acme".into(),
            PrincipalKind::ServiceAccount,
            "ci".into(),
            Roles::new(vec![]),
        );
        caches.resolved.insert(
            key_id.to_owned(),
            Arc::new(ResolvedKey {
                digest: StoredDigest::parse(&row.digest),
                row: Arc::new(row),
                principal: Arc::new(principal),
            }),
        );
    }

    #[test]
    fn a_threads_copy_of_a_resolved_key_goes_with_the_change_that_evicts_it() {
        let caches = Caches::new(&CacheConfig::default());
        assert!(caches.resolved_answer("key1").is_none());
        resolved(&caches, "key1");
        let first = caches.resolved_answer("key1").expect("cached");
        assert!(first.digest.is_some());
        let again = caches.resolved_answer("key1").expect("cached");
        assert!(
            Arc::ptr_eq(&first.principal, &again.principal),
            "the second read is this thread's copy"
        );
        // Another store in the same process does not see this one's copy.
        let other = Caches::new(&CacheConfig::default());
        assert!(other.resolved_answer("key1").is_none());

        caches.apply(&Event {
            r#type: EventKind::ApiKeyRevoked.as_str().to_owned(),
            resource: "organizations/acme/serviceAccounts/ci/apiKeys/key1".to_owned(),
            ..Default::default()
        });
        assert!(
            caches.resolved_answer("key1").is_none(),
            "a revoked key is not answered from a thread's copy"
        );
        resolved(&caches, "key1");
        assert!(caches.resolved_answer("key1").is_some());
        caches.flush();
        assert!(
            caches.resolved_answer("key1").is_none(),
            "nor after a flush"
        );
    }

    #[test]
    fn a_threads_copy_expires_with_the_shared_entry() {
        let caches = Caches::new(&CacheConfig {
            capacity: 10,
            ttl: Duration::from_millis(30),
        });
        resolved(&caches, "key2");
        assert!(caches.resolved_answer("key2").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(caches.resolved_answer("key2").is_none());
    }
}
