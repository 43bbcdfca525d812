//! Bounded, TTL-limited caches for the reads on every authenticated call:
//! API key by id, principal by name, organization by id; and OAuth client
//! by `client_id`, for the token and authorize endpoints. Invalidation is
//! one function, [`Caches::apply`], fed the events of each committed write:
//! the writing replica calls it after commit, and the event bus will call
//! it on every other replica. The TTL bounds staleness where no event
//! arrives.

use std::{sync::Arc, time::Duration};

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
    epoch: std::sync::atomic::AtomicU64,
    /// OAuth clients by `client_id` (their resource name); `None`
    /// remembers an unknown client, as for keys. Only the row: the
    /// organization's state comes from `orgs`, and secrets are checked
    /// against the row's digests on every call.
    pub clients: Cache<String, Option<Arc<OAuthClientRow>>>,
    /// Hits and misses of each cache (`tollgate_cache_lookups_total`).
    pub lookups: CacheLookups,
}

/// The hit and miss counters of one cache, registered once so a lookup
/// costs one atomic add.
#[derive(Debug, Clone)]
pub struct Lookups {
    cache: &'static str,
    hit: metrics::Counter,
    miss: metrics::Counter,
}

impl Lookups {
    fn new(cache: &'static str) -> Self {
        Self {
            cache,
            hit: metrics::counter!("tollgate_cache_lookups_total", "cache" => cache, "result" => "hit"),
            miss: metrics::counter!("tollgate_cache_lookups_total", "cache" => cache, "result" => "miss"),
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

/// A key that authenticated, with what it authenticated as.
#[derive(Debug)]
pub struct ResolvedKey {
    /// The key row (digest, expiry, owner).
    pub row: Arc<ApiKeyRow>,
    /// The row's digest, decoded once; `None` when the stored one is
    /// malformed (no key matches it).
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
            epoch: std::sync::atomic::AtomicU64::new(0),
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
    }

    /// Marks everything resolved before now as possibly stale (see
    /// [`Caches::epoch`]).
    pub fn bump(&self) {
        self.epoch
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// A counter that grows with every change applied: what was resolved
    /// under an older epoch must be resolved again. Cheaper than finding
    /// the entries a change touches, for caches keyed by something the
    /// change does not name (whole access tokens).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Forgets everything.
    pub fn flush(&self) {
        self.bump();
        self.orgs.invalidate_all();
        self.principals.invalidate_all();
        self.keys.invalidate_all();
        self.resolved.invalidate_all();
        self.clients.invalidate_all();
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
