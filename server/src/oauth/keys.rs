//! The signing keys every token is signed and verified with: the
//! [`KeyRing`] (active key per algorithm, every published key by `kid`,
//! the JWKS document), its rotation, and the JWT checks of [`KeyRing::verify`].
//!
//! # Life of a key
//!
//! A key is created published and PENDING; it signs from `activate_time`
//! (ACTIVE), which a scheduled or ordinary rotation puts
//! [`ACTIVATION_DELAY`] ahead, so every verifier that caches the JWKS for
//! [`JWKS_MAX_AGE`] has seen it before its first token. The key it
//! replaces stops signing at that instant (RETIRING) and stays published
//! until the last token it can have signed has expired: [`MAX_TOKEN_TTL`]
//! plus [`LEEWAY`] plus one [`REFRESH_INTERVAL`] (another replica may sign
//! with it until its next refresh). Then it is RETIRED: gone from the JWKS
//! and from verification. States are derived from the times, never stored.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tollgate::tollgate::v1::SigningKey;

use super::jwk::{Signer, decoding_key};
pub use super::kek::Kek;
use crate::{
    domain::{Error, Result, now_micros},
    events::WriteContext,
    store::{
        Store,
        signing_keys::{Rotation, SigningKeyRow},
    },
};

/// How long verifiers may cache the JWKS (its `Cache-Control: max-age`).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// The longest lifetime of a token Tollgate signs (the largest
/// `access_token_ttl` a client may have).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Clock skew allowed on `exp` and `nbf` (use it as `Expect::leeway_secs`).
pub const LEEWAY: Duration = Duration::from_secs(60);

/// How often each replica reloads the keys from the database.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// How far ahead of its creation a rotated key starts signing: the JWKS
/// cache lifetime plus one refresh, since a verifier may have fetched the
/// JWKS from a replica that had not reloaded yet.
pub const ACTIVATION_DELAY: Duration = Duration::from_secs(JWKS_MAX_AGE.as_secs() + 30);

/// How long a replaced key stays published after it stopped signing.
pub const RETIRE_AFTER: Duration =
    Duration::from_secs(MAX_TOKEN_TTL.as_secs() + LEEWAY.as_secs() + REFRESH_INTERVAL.as_secs());

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A JWS algorithm Tollgate signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ed25519, the default.
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// RSA 2048, PKCS#1 v1.5, SHA-256: for clients that know nothing else.
    RS256,
}

impl Algorithm {
    /// Every algorithm, the default first.
    pub const ALL: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }

    /// The algorithm named `s` (exact JWS spelling); `None` for any other,
    /// `none` and the HMAC ones included.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where "now" comes from: the system clock, or a manual one tests move.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that stays at `micros` until moved.
    pub fn manual(micros: i64) -> Self {
        Self(Some(Arc::new(AtomicI64::new(micros))))
    }

    /// Microseconds since the epoch.
    pub fn now(&self) -> i64 {
        match &self.0 {
            None => now_micros(),
            Some(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.0 {
            t.fetch_add(micros(by), Ordering::Relaxed);
        }
    }
}

/// Why a token was refused. Each reason is its own variant, so tests and
/// logs can tell them apart; callers see only UNAUTHENTICATED.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not three base64url parts, unreadable JSON, a missing `exp`/`nbf`,
    /// or a `crit` header.
    #[error("malformed token")]
    Malformed,
    /// `alg` is none of EdDSA, ES256, RS256 (`none` and HS* included).
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    /// No published key has the header's `kid` (or there is none).
    #[error("unknown token signing key")]
    UnknownKey,
    /// `alg` is not the algorithm of the key named by `kid`.
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    /// `typ` is missing or not the expected one.
    #[error("wrong token type")]
    WrongType,
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is missing or not ours.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// `aud` is missing or does not name the expected audience.
    #[error("wrong token audience")]
    WrongAudience,
}

impl From<VerifyError> for Error {
    fn from(e: VerifyError) -> Self {
        Error::Unauthenticated(e.to_string())
    }
}

/// What [`KeyRing::verify`] requires of a token besides its signature.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The `typ` header: `at+jwt` for access tokens (`application/at+jwt`
    /// is accepted too), `JWT` for ID tokens; compared case-insensitively.
    pub typ: &'a str,
    /// The `iss` claim: the configured issuer.
    pub issuer: &'a str,
    /// One audience `aud` must contain (string or array); `None` skips the
    /// check.
    pub audience: Option<&'a str>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// A key that may sign: its window and the parsed private key.
struct SigningEntry {
    kid: Arc<str>,
    activate: i64,
    deactivate: Option<i64>,
    signer: Arc<Signer>,
}

/// A published key, parsed for verification (and signing, kept so a
/// refresh does not decrypt and parse it again).
#[derive(Clone)]
struct Loaded {
    alg: Algorithm,
    decoding: jsonwebtoken::DecodingKey,
    signer: Arc<Signer>,
}

/// One immutable view of the keys; a refresh swaps in a new one.
#[derive(Default)]
struct Snapshot {
    /// Per algorithm (by `Algorithm::index`), latest activation first.
    signing: [Vec<SigningEntry>; 3],
    verifying: HashMap<String, Loaded>,
    jwks: Bytes,
}

impl Snapshot {
    /// The key of `alg` that signs at `now`: the latest activated one
    /// still inside its window; failing that (a replica between refreshes)
    /// the latest activated, or the only pending one.
    fn signer(&self, alg: Algorithm, now: i64) -> Option<&SigningEntry> {
        let keys = &self.signing[alg.index()];
        keys.iter()
            .find(|k| k.activate <= now && k.deactivate.is_none_or(|d| d > now))
            .or_else(|| keys.iter().find(|k| k.activate <= now))
            .or_else(|| keys.last())
    }
}

struct Inner {
    kek: Kek,
    clock: Clock,
    snapshot: RwLock<Arc<Snapshot>>,
}

/// The signing keys in memory. Cheap to clone; the hot path (sign,
/// verify, JWKS) takes one read lock and clones an `Arc`.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = self.snapshot();
        f.debug_struct("KeyRing")
            .field("kek", &self.inner.kek)
            .field("published", &snap.verifying.len())
            .finish()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'a str,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde_json::Value>,
}

/// `typ` values compare without the optional `application/` prefix
/// (RFC 7515 section 4.1.9) and case-insensitively.
fn same_type(got: &str, want: &str) -> bool {
    fn bare(s: &str) -> &str {
        match s.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") => &s[12..],
            _ => s,
        }
    }
    bare(got).eq_ignore_ascii_case(bare(want))
}

fn new_kid() -> Result<String> {
    let mut bytes = [0u8; 12];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| Error::Internal("no randomness for a key id".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl KeyRing {
    /// An HMAC key for `purpose`, derived from the key-encryption key
    /// (see [`Kek::hmac_key`]): shared by every replica, never stored.
    pub fn hmac_key(&self, purpose: &str) -> aws_lc_rs::hmac::Key {
        self.inner.kek.hmac_key(purpose)
    }

    /// Seals `plaintext` with the key-encryption key, bound to `context`
    /// (a webhook's secret, bound to the webhook): base64 text to store.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> crate::domain::Result<String> {
        self.inner.kek.encrypt(context, plaintext)
    }

    /// Opens what [`KeyRing::seal`] made for `context`.
    pub fn unseal(&self, context: &str, sealed: &str) -> crate::domain::Result<Vec<u8>> {
        self.inner.kek.decrypt(context, sealed)
    }

    /// The key ring of a starting server: resolves the key-encryption key
    /// of `config` (creating the SQLite default when missing and no key
    /// exists yet), then [`KeyRing::load_or_init`]. Refuses to start when
    /// keys exist but the KEK file is missing or is another key.
    pub async fn open(store: &Store, config: &crate::Config) -> anyhow::Result<KeyRing> {
        let existing = store.count_signing_keys().await?;
        let Some(file) = config.key_encryption_key_file() else {
            anyhow::bail!(
                "signing keys need a key-encryption key: with PostgreSQL set \
                 --key-encryption-key-file (TOLLGATE_KEY_ENCRYPTION_KEY_FILE) to a file holding \
                 32 random bytes in base64, the same on every replica \
                 (e.g. `head -c 32 /dev/urandom | base64 > kek`)"
            );
        };
        let kek = if file.path.exists() {
            Kek::load(&file.path)?
        } else if existing > 0 {
            anyhow::bail!(
                "the key-encryption key file {} is missing, but the database holds {existing} \
                 signing keys encrypted with it: restore the file (starting with a new key \
                 would make them unusable)",
                file.path.display()
            );
        } else if file.create_if_missing {
            let kek = Kek::create_file(&file.path)?;
            tracing::info!(path = %file.path.display(), kek_id = kek.id(), "key-encryption key created");
            kek
        } else {
            anyhow::bail!(
                "the key-encryption key file {} does not exist: create it with 32 random bytes \
                 in base64 (e.g. `head -c 32 /dev/urandom | base64 > {}`)",
                file.path.display(),
                file.path.display()
            );
        };
        Ok(Self::load_or_init(store, kek, Clock::system()).await?)
    }

    /// Seeds aws-lc's random generator on a blocking thread. Its first use
    /// in a process gathers CPU-jitter entropy, about 80 ms of CPU; started
    /// at the beginning of start-up it overlaps the migrations and the
    /// descriptors instead of delaying the key ring (on a first start) or
    /// the first call that needs randomness (on a restart).
    pub fn seed_random() {
        drop(tokio::task::spawn_blocking(|| {
            let _ = aws_lc_rs::rand::fill(&mut [0u8; 1]);
        }));
    }

    /// Loads the published keys, first making one per algorithm that has
    /// none (the first start). Refuses keys encrypted with another KEK.
    pub async fn load_or_init(store: &Store, kek: Kek, clock: Clock) -> Result<KeyRing> {
        let ring = KeyRing {
            inner: Arc::new(Inner {
                kek,
                clock,
                snapshot: RwLock::new(Arc::default()),
            }),
        };
        let now = ring.now();
        let rows = store.published_signing_keys(now).await?;
        ring.check_kek(&rows)?;
        let missing: Vec<Algorithm> = Algorithm::ALL
            .into_iter()
            .filter(|a| !rows.iter().any(|r| r.algorithm == a.as_str()))
            .collect();
        if !missing.is_empty() {
            // Side by side: RSA generation alone takes tens of milliseconds.
            let candidates = futures::future::try_join_all(
                missing.into_iter().map(|alg| ring.new_row(alg, now, now)),
            )
            .await?;
            let made = store.create_first_signing_keys(candidates, now).await?;
            for row in &made {
                tracing::info!(kid = %row.kid, algorithm = %row.algorithm, "signing key created");
            }
        }
        ring.refresh(store).await?;
        Ok(ring)
    }

    fn check_kek(&self, rows: &[SigningKeyRow]) -> Result<()> {
        let ours = self.inner.kek.id();
        if let Some(row) = rows.iter().find(|r| r.kek_id != ours) {
            return Err(Error::FailedPrecondition {
                reason: "KEY_ENCRYPTION_KEY_MISMATCH",
                message: format!(
                    "signing key {} in the database is encrypted with key-encryption key {}, \
                     but the configured key-encryption key is {ours}: restore the original \
                     --key-encryption-key-file",
                    row.kid, row.kek_id
                ),
            });
        }
        Ok(())
    }

    /// A new key of `alg`, encrypted, signing from `activate`. RSA
    /// generation takes a while, so it runs off the async threads.
    async fn new_row(&self, alg: Algorithm, now: i64, activate: i64) -> Result<SigningKeyRow> {
        let (signer, der) = tokio::task::spawn_blocking(move || Signer::generate(alg))
            .await
            .map_err(|e| Error::Internal(format!("key generation task: {e}")))??;
        let kid = new_kid()?;
        let jwk = signer.public_jwk(alg, &kid)?;
        let private_key = self.inner.kek.encrypt(&kid, &der)?;
        Ok(SigningKeyRow {
            public_jwk: serde_json::Value::Object(jwk).to_string(),
            private_key,
            kek_id: self.inner.kek.id().to_owned(),
            algorithm: alg.as_str().to_owned(),
            kid,
            create_time: now,
            activate_time: activate,
            deactivate_time: None,
            retire_time: None,
        })
    }

    fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.inner.snapshot.read() {
            Ok(s) => s.clone(),
            // A writer panicked mid-swap; the Arc inside is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the keys from the database: picks up other replicas'
    /// rotations, and drops keys whose retirement came.
    pub async fn refresh(&self, store: &Store) -> Result<()> {
        let now = self.now();
        let rows = store.published_signing_keys(now).await?;
        self.check_kek(&rows)?;
        let old = self.snapshot();
        let mut snap = Snapshot::default();
        let mut jwks = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(alg) = Algorithm::parse(&row.algorithm) else {
                tracing::warn!(kid = %row.kid, algorithm = %row.algorithm, "signing key of an unknown algorithm skipped");
                continue;
            };
            let loaded = match old.verifying.get(&row.kid) {
                Some(l) => l.clone(),
                None => {
                    let der = self.inner.kek.decrypt(&row.kid, &row.private_key)?;
                    let signer = Signer::from_pkcs8(alg, &der)?;
                    let jwk = signer.public_jwk(alg, &row.kid)?;
                    Loaded {
                        alg,
                        decoding: decoding_key(&jwk)?,
                        signer: Arc::new(signer),
                    }
                }
            };
            jwks.push(loaded.signer.public_jwk(alg, &row.kid)?);
            snap.signing[alg.index()].push(SigningEntry {
                kid: row.kid.as_str().into(),
                activate: row.activate_time,
                deactivate: row.deactivate_time,
                signer: loaded.signer.clone(),
            });
            snap.verifying.insert(row.kid.clone(), loaded);
        }
        let doc = serde_json::json!({ "keys": jwks });
        snap.jwks = Bytes::from(
            serde_json::to_vec(&doc).map_err(|e| Error::Internal(format!("JWKS: {e}")))?,
        );
        let snap = Arc::new(snap);
        match self.inner.snapshot.write() {
            Ok(mut s) => *s = snap,
            Err(poisoned) => *poisoned.into_inner() = snap,
        }
        Ok(())
    }

    /// Signs `claims` with the active key of `alg`; the header carries
    /// `alg`, `kid` and `typ` (`at+jwt` for access tokens, `JWT` for ID
    /// tokens). Verification requires `exp`, `nbf` and `iss` claims.
    pub fn sign<C: Serialize>(&self, alg: Algorithm, typ: &str, claims: &C) -> Result<String> {
        let snap = self.snapshot();
        let key = snap
            .signer(alg, self.now())
            .ok_or_else(|| Error::Internal(format!("no {alg} signing key")))?;
        let header = serde_json::to_vec(&Header {
            alg: alg.as_str(),
            kid: &key.kid,
            typ,
        })
        .map_err(|e| Error::Internal(format!("JWT header: {e}")))?;
        let payload =
            serde_json::to_vec(claims).map_err(|e| Error::Internal(format!("JWT claims: {e}")))?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = key.signer.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// Verifies `token` against the published keys and `expect`, and
    /// returns its claims. The header is judged first (algorithm, key,
    /// type), so a hostile header never reaches the signature check.
    pub fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<C, VerifyError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| VerifyError::Malformed)?;
        let header: RawHeader =
            serde_json::from_slice(&header).map_err(|_| VerifyError::Malformed)?;
        if header.crit.is_some() {
            return Err(VerifyError::Malformed);
        }
        let alg = header
            .alg
            .as_deref()
            .and_then(Algorithm::parse)
            .ok_or(VerifyError::UnsupportedAlgorithm)?;
        let snap = self.snapshot();
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| snap.verifying.get(kid))
            .ok_or(VerifyError::UnknownKey)?;
        if key.alg != alg {
            return Err(VerifyError::AlgorithmMismatch);
        }
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| same_type(t, expect.typ))
        {
            return Err(VerifyError::WrongType);
        }
        let mut validation = jsonwebtoken::Validation::new(alg.jwt());
        validation.leeway = expect.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[expect.issuer]);
        let mut required = vec!["exp", "nbf", "iss"];
        match expect.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        jsonwebtoken::decode::<C>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => VerifyError::BadSignature,
                    K::ExpiredSignature => VerifyError::Expired,
                    K::ImmatureSignature => VerifyError::NotYetValid,
                    K::InvalidIssuer => VerifyError::WrongIssuer,
                    K::InvalidAudience => VerifyError::WrongAudience,
                    K::MissingRequiredClaim(c) if c == "iss" => VerifyError::WrongIssuer,
                    K::MissingRequiredClaim(c) if c == "aud" => VerifyError::WrongAudience,
                    K::InvalidAlgorithm => VerifyError::AlgorithmMismatch,
                    _ => VerifyError::Malformed,
                }
            })
    }

    /// The JWKS document: every published public key.
    pub fn jwks(&self) -> Bytes {
        self.snapshot().jwks.clone()
    }

    /// The algorithms tokens may be signed with, the default first
    /// (discovery's `id_token_signing_alg_values_supported`).
    pub fn algorithms(&self) -> &[Algorithm] {
        &Algorithm::ALL
    }

    /// Whether `kid` is published (in the JWKS and accepted by `verify`).
    pub fn is_published(&self, kid: &str) -> bool {
        self.snapshot().verifying.contains_key(kid)
    }

    /// The `kid` that signs `alg` now.
    pub fn active_kid(&self, alg: Algorithm) -> Option<String> {
        self.snapshot()
            .signer(alg, self.now())
            .map(|k| k.kid.to_string())
    }

    /// The stored keys as the API shows them, newest first; RETIRED ones
    /// only with `show_retired`.
    pub async fn list(&self, store: &Store, show_retired: bool) -> Result<Vec<SigningKey>> {
        let now = self.now();
        let rows = store.list_signing_keys(show_retired, now).await?;
        Ok(rows.iter().map(|r| r.to_proto(now)).collect())
    }

    /// Starts a rotation of `alg` on behalf of `ctx`: a new key, published
    /// at once, signing after [`ACTIVATION_DELAY`] (at once when
    /// `immediate`); the key it replaces stops signing then and is retired
    /// [`RETIRE_AFTER`] later.
    pub async fn rotate(
        &self,
        store: &Store,
        ctx: &WriteContext,
        alg: Algorithm,
        immediate: bool,
    ) -> Result<SigningKey> {
        let now = self.now();
        let row = self
            .rotate_row(store, ctx, alg, immediate, now, None)
            .await?
            .ok_or_else(|| Error::Internal("unconditional rotation skipped".into()))?;
        Ok(row.to_proto(now))
    }

    async fn rotate_row(
        &self,
        store: &Store,
        ctx: &WriteContext,
        alg: Algorithm,
        immediate: bool,
        now: i64,
        only_if_created_before: Option<i64>,
    ) -> Result<Option<SigningKeyRow>> {
        let activate = if immediate {
            now
        } else {
            now.saturating_add(micros(ACTIVATION_DELAY))
        };
        let new = self.new_row(alg, now, activate).await?;
        let rotation = Rotation {
            new,
            retire_time: activate.saturating_add(micros(RETIRE_AFTER)),
            only_if_created_before,
        };
        let rotated = store.rotate_signing_key(ctx, rotation, now).await?;
        if let Some(row) = &rotated {
            tracing::info!(kid = %row.kid, %alg, immediate, "signing key rotated");
            self.refresh(store).await?;
        }
        Ok(rotated)
    }

    /// Rotates every algorithm whose newest key is older than `every`
    /// (the schedule); returns the new keys. Replicas racing on it make one
    /// key: the age is checked again under the store's lock.
    pub async fn rotate_due(&self, store: &Store, every: Duration) -> Result<Vec<SigningKey>> {
        let now = self.now();
        let cutoff = now.saturating_sub(micros(every));
        let rows = store.published_signing_keys(now).await?;
        let ctx = WriteContext::system("signing-key-rotation");
        let mut out = Vec::new();
        for alg in Algorithm::ALL {
            let newest = rows
                .iter()
                .filter(|r| r.algorithm == alg.as_str())
                .map(|r| r.create_time)
                .max();
            if newest.is_some_and(|t| t > cutoff) {
                continue;
            }
            if let Some(row) = self
                .rotate_row(store, &ctx, alg, false, now, Some(cutoff))
                .await?
            {
                out.push(row.to_proto(now));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests;
