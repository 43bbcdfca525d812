//! Bounded, TTL-limited caches for the reads on every authenticated call:
//! API key by id, principal by name, organization by id. The repository
//! that writes invalidates; the TTL bounds staleness where it cannot (other
//! replicas, until bus invalidation lands).

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;

use super::{api_keys::ApiKeyRow, organizations::OrganizationRow, principals::PrincipalRecord};
use crate::domain::names::PrincipalKind;

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

pub struct Caches {
    pub orgs: Cache<String, Arc<OrganizationRow>>,
    pub principals: Cache<PrincipalKey, Arc<PrincipalRecord>>,
    /// `None` remembers that a key id does not exist, so a flood of made-up
    /// keys does not become a flood of queries.
    pub keys: Cache<String, Option<Arc<ApiKeyRow>>>,
}

impl Caches {
    pub fn new(c: &CacheConfig) -> Self {
        Self {
            orgs: Cache::builder()
                .max_capacity(c.capacity)
                .time_to_live(c.ttl)
                .build(),
            principals: Cache::builder()
                .max_capacity(c.capacity)
                .time_to_live(c.ttl)
                .support_invalidation_closures()
                .build(),
            keys: Cache::builder()
                .max_capacity(c.capacity)
                .time_to_live(c.ttl)
                .support_invalidation_closures()
                .build(),
        }
    }

    /// Forgets everything cached about an organization and its members.
    pub fn invalidate_org(&self, org: &str) {
        self.orgs.invalidate(org);
        let o = org.to_owned();
        let _ = self.principals.invalidate_entries_if(move |k, _| k.0 == o);
        let o = org.to_owned();
        let _ = self
            .keys
            .invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|k| k.org_id == o));
    }
}
