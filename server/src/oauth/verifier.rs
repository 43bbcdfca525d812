//! Access tokens as credentials: verified once, then served from a cache
//! keyed by the whole token, so the hot path pays one hash lookup instead
//! of a signature check per call.
//!
//! A cached answer is trusted while three things hold: the token has not
//! expired (checked on every hit), no change was applied to the caches
//! since it was resolved (the [`Caches::epoch`] it was resolved in; a
//! principal disabled, demoted or deleted changes the epoch), and its
//! `jti` was not revoked (a revocation changes the epoch too, and the
//! revoked set is consulted when the token is resolved again).
//!
//! [`Caches::epoch`]: crate::store::Caches::epoch

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;

use super::{
    claims::{ACCESS_TOKEN_TYP, AccessClaims},
    keys::{Expect, KeyRing, LEEWAY},
};
use crate::domain::{
    Error, Result,
    authz::{Credential, Principal},
    names::PrincipalName,
    scope::Scopes,
};
use crate::store::ttl_cache::TtlCache;

/// A verified access token and the principal it acts as.
#[derive(Debug)]
pub struct VerifiedAccess {
    /// Its claims.
    pub claims: AccessClaims,
    /// The principal, with its current roles, narrowed to the token's
    /// scopes.
    pub principal: Arc<Principal>,
    /// Whether Tollgate is among its audiences: only then is it a
    /// credential for calls to Tollgate (others are cached for
    /// introspection and token exchange).
    pub for_tollgate: bool,
    /// The cache epoch it was resolved in.
    epoch: u64,
}

impl VerifiedAccess {
    /// A verified token not kept in the cache (subject tokens of a token
    /// exchange, introspection).
    pub fn unremembered(claims: AccessClaims, principal: Arc<Principal>) -> Self {
        Self {
            claims,
            principal,
            for_tollgate: false,
            epoch: 0,
        }
    }
}

/// How many verified tokens to remember.
const CAPACITY: u64 = 50_000;
/// Revocations remembered in memory; beyond, the database answers.
const REVOKED_CAPACITY: u64 = 200_000;
/// An upper bound on any entry's life; expiry is checked on every hit.
const MAX_LIFE: Duration = Duration::from_secs(10 * 60);

/// Verifies Tollgate's access tokens for calls to Tollgate.
pub struct AccessTokens {
    keys: KeyRing,
    issuer: String,
    /// Keyed by the whole token with a fast (not flood-resistant) hash:
    /// only tokens that verified are ever inserted, so an attacker cannot
    /// choose the keys, and hashing 700 bytes with SipHash on every call
    /// cost more than the rest of the lookup.
    verified: TtlCache<Arc<str>, Arc<VerifiedAccess>, foldhash::fast::RandomState>,
    /// Revoked jtis until their token's expiry (seconds).
    revoked: Cache<String, i64>,
    /// Set once the revoked set evicted an entry for lack of room: from
    /// then on a miss in it proves nothing, and tokens being verified are
    /// also looked up in the database (only on verified-cache misses).
    revocations_overflowed: Arc<std::sync::atomic::AtomicBool>,
}

impl AccessTokens {
    /// Verifies tokens signed by `keys` and issued by `issuer`.
    pub fn new(keys: KeyRing, issuer: String) -> Self {
        Self::with_revocation_capacity(keys, issuer, REVOKED_CAPACITY)
    }

    /// Like [`AccessTokens::new`], remembering at most `capacity`
    /// revocations in memory (tests make it small).
    pub fn with_revocation_capacity(keys: KeyRing, issuer: String, capacity: u64) -> Self {
        let overflowed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = overflowed.clone();
        Self {
            keys,
            issuer,
            verified: TtlCache::with_hasher(
                CAPACITY,
                MAX_LIFE,
                foldhash::fast::RandomState::default(),
            ),
            revoked: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(super::keys::MAX_TOKEN_TTL + LEEWAY)
                .eviction_listener(move |_, _, cause| {
                    if cause == moka::notification::RemovalCause::Size
                        && !flag.swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::warn!(
                            target: "tollgate::security",
                            event = "revocations_overflowed",
                            "more revoked tokens than fit in memory; revocations are now also checked in the database"
                        );
                    }
                })
                .build(),
            revocations_overflowed: overflowed,
        }
    }

    /// Whether a miss in the in-memory revoked set must be confirmed in
    /// the database.
    pub fn revocations_overflowed(&self) -> bool {
        self.revocations_overflowed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The issuer tokens must name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The cached answer for `token` when still good in `epoch`; `None`
    /// when it must be verified.
    pub fn cached(&self, token: &str, epoch: u64) -> Option<Arc<VerifiedAccess>> {
        let hit = self.verified.get(token)?;
        // `exp` is in seconds: the coarse clock (see `clock`) will do.
        if hit.epoch != epoch || hit.claims.exp <= crate::clock::coarse_unix_micros() / 1_000_000 {
            return None;
        }
        Some(hit)
    }

    /// Checks the signature and claims of `token` (any audience: the
    /// caller decides what the audience means) and that it is not revoked.
    pub fn verify_claims(&self, token: &str) -> Result<AccessClaims> {
        let claims: AccessClaims = self.keys.verify(
            token,
            &Expect {
                typ: ACCESS_TOKEN_TYP,
                issuer: &self.issuer,
                audience: None,
                leeway_secs: LEEWAY.as_secs(),
            },
        )?;
        if self.revoked.contains_key(&claims.jti) {
            return Err(Error::Unauthenticated("token revoked".into()));
        }
        Ok(claims)
    }

    /// The principal `claims` name, scoped, given what the principal is
    /// now (`record`: its current roles and uid).
    pub fn principal_of(
        claims: &AccessClaims,
        current: &Principal,
        current_uid: &str,
    ) -> Result<Principal> {
        if claims.uid != current_uid {
            // Deleted and re-created under the same name.
            return Err(Error::Unauthenticated(
                "the token's principal no longer exists".into(),
            ));
        }
        let scopes = Scopes::parse("scope", &claims.scope)
            .map_err(|_| Error::Unauthenticated("token with unreadable scopes".into()))?;
        Ok(Principal::new(
            current.org.clone(),
            current.kind,
            current.id.clone(),
            current.roles.clone(),
        )
        .with_scopes(Scopes::Only(scopes))
        .with_credential(Credential::OAuthClient(claims.client_id.as_str().into())))
    }

    /// The subject of `claims`, parsed.
    pub fn subject(claims: &AccessClaims) -> Result<PrincipalName> {
        PrincipalName::parse_any("sub", &claims.sub)
            .map_err(|_| Error::Unauthenticated("token with an unreadable subject".into()))
    }

    /// Remembers a verified token for calls in `epoch`.
    pub fn remember(
        &self,
        token: &str,
        claims: AccessClaims,
        principal: Arc<Principal>,
        epoch: u64,
    ) -> Arc<VerifiedAccess> {
        let entry = Arc::new(VerifiedAccess {
            for_tollgate: claims.aud.contains(&self.issuer),
            claims,
            principal,
            epoch,
        });
        self.verified.insert(Arc::from(token), entry.clone());
        entry
    }

    /// The refusal of a valid token meant for someone else.
    pub fn wrong_audience() -> Error {
        Error::Unauthenticated(super::keys::VerifyError::WrongAudience.to_string())
    }

    /// Records a revoked jti (until `exp`, seconds).
    pub fn note_revoked(&self, jti: String, exp: i64) {
        self.revoked.insert(jti, exp);
        // Evictions (and so the overflow flag) take effect now rather than
        // at some later lookup; revocations are rare enough to pay for it.
        self.revoked.run_pending_tasks();
    }
}

/// Whether `token` is shaped like a JWT (three base64url parts), so API
/// keys and garbage never reach the JSON parser.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut dots = 0;
    for b in token.bytes() {
        match b {
            b'.' => dots += 1,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            _ => return false,
        }
    }
    dots == 2 && token.len() <= 8 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        layers::authenticate::Credentials,
        oauth::{claims::Audience, keys::Algorithm},
    };

    /// More revocations than fit in memory: the overflow is noticed, and
    /// a revocation only the database knows (another replica's, not yet
    /// polled) is still enforced.
    #[tokio::test]
    async fn revocations_beyond_memory_are_checked_in_the_database() {
        let (_dir, store, ring) = crate::oauth::keys::tests::ring().await;
        crate::bootstrap::ensure_root(&store).await.unwrap();
        let issuer = "https://tollgate.example".to_owned();
        let tokens = Arc::new(AccessTokens::with_revocation_capacity(
            ring.clone(),
            issuer.clone(),
            2,
        ));
        let credentials = Credentials::new(store.clone()).with_access_tokens(tokens.clone());
        let name =
            PrincipalName::parse_any("sub", "organizations/root/serviceAccounts/admin").unwrap();
        let uid = store
            .principal_record(name.clone())
            .await
            .unwrap()
            .unwrap()
            .uid
            .clone();
        let now = crate::domain::now_micros() / 1_000_000;
        let token = |jti: &str| {
            ring.sign(
                Algorithm::EdDSA,
                ACCESS_TOKEN_TYP,
                &AccessClaims {
                    iss: issuer.clone(),
                    sub: name.to_string(),
                    aud: Audience::One(issuer.clone()),
                    exp: now + 600,
                    iat: now,
                    nbf: now,
                    jti: jti.into(),
                    client_id: "organizations/root/clients/c".into(),
                    scope: "*".into(),
                    org: "root".into(),
                    roles: vec!["admin".into()],
                    uid: uid.clone(),
                    auth_time: None,
                    act: None,
                },
            )
            .unwrap()
        };
        assert!(credentials.resolve(&token("a")).await.is_ok());
        assert!(!tokens.revocations_overflowed());
        let ctx = crate::events::WriteContext::system("test");
        let revoked = |jti: &str| tollgate::tollgate::v1::RevokedToken {
            jti: jti.into(),
            client: "organizations/root/clients/c".into(),
            expire_time: Some(prost_types::Timestamp {
                seconds: now + 600,
                nanos: 0,
            }),
            ..Default::default()
        };
        for jti in ["r1", "r2", "r3", "r4"] {
            credentials
                .revoke_access_token(&ctx, "root", revoked(jti))
                .await
                .unwrap();
        }
        assert!(tokens.revocations_overflowed());
        // Revoked in the database only.
        store.revoke_jti(&ctx, "root", revoked("b")).await.unwrap();
        let refused = credentials.resolve(&token("b")).await.unwrap_err();
        assert!(refused.to_string().contains("revoked"), "{refused}");
        // Every revoked token stays refused, in memory or not.
        for jti in ["r1", "r2", "r3", "r4"] {
            assert!(credentials.resolve(&token(jti)).await.is_err(), "{jti}");
        }
        assert!(credentials.resolve(&token("c")).await.is_ok());
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("tg_abc_def"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a.b=.c"));
    }
}
