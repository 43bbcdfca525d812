//! What the OAuth grants keep: authorization codes, refresh tokens (in
//! families) and the ids of access tokens revoked before their expiry.
//!
//! Codes and refresh tokens are single use. Redeeming one is a
//! compare-and-set on `used_time` inside a transaction, so two racing
//! redemptions cannot both succeed, and presenting one again is a sign it
//! leaked: a reused code revokes the family its first redemption started
//! (RFC 6749 section 4.1.2), a reused refresh token revokes its whole
//! family, the new token included (OAuth 2.1 section 6.1).
//!
//! These rows are credentials, not resources: they have no resource name
//! and no events; the audit trail of sign-ins and grants is the security
//! log.

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper};

use tollgate::tollgate::v1::RevokedToken;

use super::{
    Store, Tx,
    schema::{authorization_codes, refresh_tokens, revoked_tokens},
};
use crate::{
    domain::{
        Result,
        names::{PrincipalKind, PrincipalName},
        now_micros,
        secret::{self, CODE_PREFIX, REFRESH_PREFIX, Secret},
    },
    events::{After, EventKind, WriteContext},
};

/// How long an authorization code may wait for its exchange (RFC 6749
/// recommends at most 10 minutes; one is plenty for a redirect).
pub const CODE_TTL_MICROS: i64 = 60 * 1_000_000;

/// A stored authorization code.
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = authorization_codes)]
pub struct CodeRow {
    /// Hex SHA-256 of the code.
    pub digest: String,
    /// The client's (and the user's) organization.
    pub org_id: String,
    /// The client's id within the organization.
    pub client_id: String,
    /// The user who signed in.
    pub user_id: String,
    /// The redirect URI of the authorization request, to compare at the
    /// exchange.
    pub redirect_uri: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Requested audiences, space-separated.
    pub audience: String,
    /// The OIDC nonce, echoed in the ID token.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// When the user signed in (microseconds).
    pub auth_time: i64,
    /// When the code was issued.
    pub create_time: i64,
    /// After this the code is refused.
    pub expire_time: i64,
    /// Set by the first redemption.
    pub used_time: Option<i64>,
    /// The refresh family the redemption started, if any.
    pub family_id: Option<String>,
}

/// What an authorization code is issued for.
#[derive(Debug, Clone)]
pub struct NewCode {
    /// The client's organization.
    pub org_id: String,
    /// The client's id within it.
    pub client_id: String,
    /// The user who signed in and consented.
    pub user_id: String,
    /// The redirect URI the code is sent to.
    pub redirect_uri: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Requested audiences, space-separated.
    pub audience: String,
    /// The OIDC nonce.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// When the user signed in (microseconds).
    pub auth_time: i64,
}

/// A stored refresh token.
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshRow {
    /// Hex SHA-256 of the token.
    pub digest: String,
    /// Shared by every token rotated from the same grant.
    pub family_id: String,
    /// The client's organization.
    pub org_id: String,
    /// The client's id within it.
    pub client_id: String,
    /// `PrincipalKind::code` of the subject.
    pub subject_kind: i16,
    /// The subject's id in the organization.
    pub subject_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Audiences, space-separated.
    pub audience: String,
    /// The OIDC nonce of the original authorization.
    pub nonce: Option<String>,
    /// When the user signed in.
    pub auth_time: i64,
    /// When this token was issued.
    pub create_time: i64,
    /// The family's end.
    pub expire_time: i64,
    /// Set when the token was exchanged for its successor.
    pub used_time: Option<i64>,
    /// Set when the family was revoked.
    pub revoke_time: Option<i64>,
}

impl RefreshRow {
    /// The subject's kind; `None` for a corrupt row.
    pub fn subject_kind(&self) -> Option<PrincipalKind> {
        PrincipalKind::from_code(self.subject_kind)
    }
}

/// What a refresh family is started for.
#[derive(Debug, Clone)]
pub struct NewFamily {
    /// The client's organization.
    pub org_id: String,
    /// The client's id within it.
    pub client_id: String,
    /// Whom the tokens act for.
    pub subject_kind: PrincipalKind,
    /// Its id.
    pub subject_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Audiences, space-separated.
    pub audience: String,
    /// The OIDC nonce.
    pub nonce: Option<String>,
    /// When the user signed in.
    pub auth_time: i64,
    /// The family's end (microseconds).
    pub expire_time: i64,
}

/// Why a code or refresh token was refused; every variant is
/// `invalid_grant` to the client, the distinction is for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefusal {
    /// Not shaped like one, or never issued.
    #[error("unknown")]
    Unknown,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// Presented a second time; its family is now revoked.
    #[error("already used")]
    Reused,
    /// Its family was revoked.
    #[error("revoked")]
    Revoked,
    /// Issued to another client.
    #[error("issued to another client")]
    OtherClient,
}

/// A redemption's outcome: the row, or why not (storage failures are the
/// outer `Result`).
pub type Redeemed<T> = std::result::Result<T, GrantRefusal>;

/// A fresh family id: 128 random bits, not a secret (it never leaves the
/// server), only unique.
fn family_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Revokes every live token of `family` (of `org`'s `client`, acting as
/// `subject`) as of `now`, with its `token.revoked` event when any was
/// live.
fn revoke_family(
    tx: &mut Tx<'_>,
    family: &str,
    (org, client, subject): (&str, &str, String),
    reason: &str,
    now: i64,
) -> Result<usize> {
    let revoked = diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoke_time.is_null()),
    )
    .set(refresh_tokens::revoke_time.eq(now))
    .execute(tx.conn)?;
    if revoked > 0 {
        let client = format!("organizations/{org}/clients/{client}");
        tx.emit(
            EventKind::TokenRevoked,
            org,
            client.clone(),
            After::RevokedToken(RevokedToken {
                token_type: REFRESH_TOKEN_TYPE.into(),
                family: family.into(),
                client,
                subject,
                reason: reason.into(),
                ..RevokedToken::default()
            }),
        )?;
    }
    Ok(revoked)
}

/// `RevokedToken.token_type` of a refresh token family.
const REFRESH_TOKEN_TYPE: &str = "refresh_token";
/// `RevokedToken.token_type` of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "access_token";
/// `RevokedToken.reason` of a revocation asked for.
pub const REVOKED: &str = "revoked";
/// `RevokedToken.reason` of a family revoked because a token or code was
/// presented twice.
const REUSED: &str = "reused";

/// The resource name of a refresh token's subject.
fn subject_of(row: &RefreshRow) -> String {
    match row.subject_kind() {
        Some(kind) => PrincipalName {
            org: row.org_id.clone(),
            kind,
            id: row.subject_id.clone(),
        }
        .to_string(),
        None => String::new(),
    }
}

impl Store {
    /// Issues an authorization code; returns the code to send once.
    pub async fn create_authorization_code(&self, new: NewCode) -> Result<Secret> {
        let code = Secret::mint(CODE_PREFIX);
        let now = now_micros();
        let row = CodeRow {
            digest: code.digest(),
            org_id: new.org_id,
            client_id: new.client_id,
            user_id: new.user_id,
            redirect_uri: new.redirect_uri,
            scope: new.scope,
            audience: new.audience,
            nonce: new.nonce,
            code_challenge: new.code_challenge,
            auth_time: new.auth_time,
            create_time: now,
            expire_time: now + CODE_TTL_MICROS,
            used_time: None,
            family_id: None,
        };
        self.db
            .write(move |conn| {
                diesel::insert_into(authorization_codes::table)
                    .values(&row)
                    .execute(conn)?;
                Ok(())
            })
            .await?;
        Ok(code)
    }

    /// Redeems a code for `(org, client)` once. The caller checks the
    /// redirect URI and PKCE verifier against the returned row, and starts
    /// the refresh family (if any) with [`Store::start_family`] passing the
    /// code's digest, so a later reuse of the code revokes it.
    pub async fn redeem_authorization_code(
        &self,
        ctx: &WriteContext,
        code: &str,
        org: &str,
        client: &str,
    ) -> Result<Redeemed<CodeRow>> {
        if !secret::well_formed(code, CODE_PREFIX) {
            return Ok(Err(GrantRefusal::Unknown));
        }
        let digest = secret::digest(code);
        let (org, client) = (org.to_owned(), client.to_owned());
        self.write(ctx, move |tx| {
            let now = now_micros();
            let Some(row) = authorization_codes::table
                .find(&digest)
                .select(CodeRow::as_select())
                .first(tx.conn)
                .optional()?
            else {
                return Ok(Err(GrantRefusal::Unknown));
            };
            if row.org_id != org || row.client_id != client {
                return Ok(Err(GrantRefusal::OtherClient));
            }
            if row.used_time.is_some() {
                if let Some(family) = &row.family_id {
                    let subject = format!("organizations/{org}/users/{}", row.user_id);
                    revoke_family(tx, family, (&org, &client, subject), REUSED, now)?;
                }
                return Ok(Err(GrantRefusal::Reused));
            }
            if row.expire_time <= now {
                return Ok(Err(GrantRefusal::Expired));
            }
            // The compare-and-set: of two racing redemptions on
            // PostgreSQL, the second finds used_time set and updates
            // nothing.
            let updated = diesel::update(
                authorization_codes::table
                    .find(&digest)
                    .filter(authorization_codes::used_time.is_null()),
            )
            .set(authorization_codes::used_time.eq(now))
            .execute(tx.conn)?;
            if updated == 0 {
                return Ok(Err(GrantRefusal::Reused));
            }
            Ok(Ok(CodeRow {
                used_time: Some(now),
                ..row
            }))
        })
        .await
    }

    /// Starts a refresh family and issues its first token; when it comes
    /// from a code, records the family on the code so a reuse of the code
    /// revokes it.
    pub async fn start_family(
        &self,
        new: NewFamily,
        code_digest: Option<String>,
    ) -> Result<Secret> {
        let token = Secret::mint(REFRESH_PREFIX);
        let family = family_id();
        let row = RefreshRow {
            digest: token.digest(),
            family_id: family.clone(),
            org_id: new.org_id,
            client_id: new.client_id,
            subject_kind: new.subject_kind.code(),
            subject_id: new.subject_id,
            scope: new.scope,
            audience: new.audience,
            nonce: new.nonce,
            auth_time: new.auth_time,
            create_time: now_micros(),
            expire_time: new.expire_time,
            used_time: None,
            revoke_time: None,
        };
        self.db
            .write(move |conn| {
                diesel::insert_into(refresh_tokens::table)
                    .values(&row)
                    .execute(conn)?;
                if let Some(code) = code_digest {
                    diesel::update(authorization_codes::table.find(code))
                        .set(authorization_codes::family_id.eq(&family))
                        .execute(conn)?;
                }
                Ok(())
            })
            .await?;
        Ok(token)
    }

    /// Exchanges a refresh token of `(org, client)` for its successor in
    /// the same family, with `scope` (the caller has checked it is within
    /// the family's). A token presented again revokes its family.
    pub async fn rotate_refresh_token(
        &self,
        ctx: &WriteContext,
        token: &str,
        org: &str,
        client: &str,
        scope: String,
    ) -> Result<Redeemed<(RefreshRow, Secret)>> {
        if !secret::well_formed(token, REFRESH_PREFIX) {
            return Ok(Err(GrantRefusal::Unknown));
        }
        let digest = secret::digest(token);
        let (org, client) = (org.to_owned(), client.to_owned());
        let next = Secret::mint(REFRESH_PREFIX);
        let next_digest = next.digest();
        let out = self
            .write(ctx, move |tx| {
                let now = now_micros();
                let Some(row) = refresh_tokens::table
                    .find(&digest)
                    .select(RefreshRow::as_select())
                    .first(tx.conn)
                    .optional()?
                else {
                    return Ok(Err(GrantRefusal::Unknown));
                };
                if row.org_id != org || row.client_id != client {
                    return Ok(Err(GrantRefusal::OtherClient));
                }
                if row.revoke_time.is_some() {
                    return Ok(Err(GrantRefusal::Revoked));
                }
                let family = (org.as_str(), client.as_str(), subject_of(&row));
                if row.used_time.is_some() {
                    revoke_family(tx, &row.family_id, family, REUSED, now)?;
                    return Ok(Err(GrantRefusal::Reused));
                }
                if row.expire_time <= now {
                    return Ok(Err(GrantRefusal::Expired));
                }
                let updated = diesel::update(
                    refresh_tokens::table
                        .find(&digest)
                        .filter(refresh_tokens::used_time.is_null()),
                )
                .set(refresh_tokens::used_time.eq(now))
                .execute(tx.conn)?;
                if updated == 0 {
                    // Lost a race with another redemption of the same
                    // token: that is a reuse too.
                    revoke_family(tx, &row.family_id, family, REUSED, now)?;
                    return Ok(Err(GrantRefusal::Reused));
                }
                let successor = RefreshRow {
                    digest: next_digest,
                    scope,
                    create_time: now,
                    used_time: None,
                    revoke_time: None,
                    ..row.clone()
                };
                diesel::insert_into(refresh_tokens::table)
                    .values(&successor)
                    .execute(tx.conn)?;
                Ok(Ok(row))
            })
            .await?;
        Ok(out.map(|row| (row, next)))
    }

    /// The live refresh token `token`, without using it (introspection).
    pub async fn peek_refresh_token(&self, token: &str) -> Result<Option<RefreshRow>> {
        if !secret::well_formed(token, REFRESH_PREFIX) {
            return Ok(None);
        }
        let digest = secret::digest(token);
        let row = self
            .db
            .run(move |conn| {
                Ok(refresh_tokens::table
                    .find(&digest)
                    .select(RefreshRow::as_select())
                    .first(conn)
                    .optional()?)
            })
            .await?;
        let now = now_micros();
        Ok(row.filter(|r| r.used_time.is_none() && r.revoke_time.is_none() && r.expire_time > now))
    }

    /// Revokes the family of refresh token `token` when it belongs to
    /// `(org, client)`. `Ok(false)` when there is no such token (RFC 7009:
    /// still a success to the client) ; `Err(OtherClient)` when it is
    /// another client's.
    pub async fn revoke_refresh_token(
        &self,
        ctx: &WriteContext,
        token: &str,
        org: &str,
        client: &str,
    ) -> Result<Redeemed<bool>> {
        if !secret::well_formed(token, REFRESH_PREFIX) {
            return Ok(Ok(false));
        }
        let digest = secret::digest(token);
        let (org, client) = (org.to_owned(), client.to_owned());
        self.write(ctx, move |tx| {
            let Some(row) = refresh_tokens::table
                .find(&digest)
                .select(RefreshRow::as_select())
                .first(tx.conn)
                .optional()?
            else {
                return Ok(Ok(false));
            };
            if row.org_id != org || row.client_id != client {
                return Ok(Err(GrantRefusal::OtherClient));
            }
            let family = (org.as_str(), client.as_str(), subject_of(&row));
            revoke_family(tx, &row.family_id, family, REVOKED, now_micros())?;
            Ok(Ok(true))
        })
        .await
    }

    /// Records that the access token `revoked.jti` of `org` is revoked
    /// until its `expire_time`, when it would have expired anyway, with
    /// its `token.revoked` event. Idempotent: revoking it again changes
    /// nothing and appends nothing.
    pub async fn revoke_jti(
        &self,
        ctx: &WriteContext,
        org: &str,
        revoked: RevokedToken,
    ) -> Result<()> {
        let org = org.to_owned();
        let expire_time = revoked
            .expire_time
            .as_ref()
            .map_or(0, |t| t.seconds.saturating_mul(1_000_000));
        self.write(ctx, move |tx| {
            let exists = revoked_tokens::table
                .find(&revoked.jti)
                .select(revoked_tokens::jti)
                .first::<String>(tx.conn)
                .optional()?
                .is_some();
            if !exists {
                diesel::insert_into(revoked_tokens::table)
                    .values((
                        revoked_tokens::jti.eq(&revoked.jti),
                        revoked_tokens::expire_time.eq(expire_time),
                        revoked_tokens::revoke_time.eq(now_micros()),
                    ))
                    .execute(tx.conn)?;
                let resource = revoked.client.clone();
                tx.emit(
                    EventKind::TokenRevoked,
                    &org,
                    resource,
                    After::RevokedToken(revoked),
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Whether the access token `jti` was revoked.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool> {
        let jti = jti.to_owned();
        Ok(self
            .db
            .run(move |conn| {
                Ok(revoked_tokens::table
                    .find(&jti)
                    .select(revoked_tokens::jti)
                    .first::<String>(conn)
                    .optional()?)
            })
            .await?
            .is_some())
    }

    /// The access tokens revoked since `since` (microseconds) that have
    /// not expired yet, as `(jti, expire_time)`: what a replica loads at
    /// start and polls for afterwards.
    pub async fn revoked_jtis_since(&self, since: i64) -> Result<Vec<(String, i64, i64)>> {
        self.db
            .run(move |conn| {
                Ok(revoked_tokens::table
                    .filter(revoked_tokens::revoke_time.ge(since))
                    .filter(revoked_tokens::expire_time.gt(now_micros()))
                    .select((
                        revoked_tokens::jti,
                        revoked_tokens::expire_time,
                        revoked_tokens::revoke_time,
                    ))
                    .load(conn)?)
            })
            .await
    }

    /// Deletes, at most `batch` rows per statement, what can no longer be
    /// used nor needs remembering: authorization codes and refresh tokens
    /// expired for a day (a reuse within it still revokes the family), and
    /// revoked access tokens past their expiry (refused as expired now).
    /// Returns how many rows.
    pub async fn purge_expired_tokens(&self, batch: i64) -> Result<u64> {
        const DAY: i64 = 86_400_000_000;
        let batch = batch.max(1);
        let mut purged = 0u64;
        loop {
            let n = self
                .db
                .run(move |conn| {
                    let now = now_micros();
                    let codes: Vec<String> = authorization_codes::table
                        .filter(authorization_codes::expire_time.lt(now - DAY))
                        .limit(batch)
                        .select(authorization_codes::digest)
                        .load(conn)?;
                    let mut n = diesel::delete(
                        authorization_codes::table
                            .filter(authorization_codes::digest.eq_any(&codes)),
                    )
                    .execute(conn)?;
                    let refresh: Vec<String> = refresh_tokens::table
                        .filter(refresh_tokens::expire_time.lt(now - DAY))
                        .limit(batch)
                        .select(refresh_tokens::digest)
                        .load(conn)?;
                    n += diesel::delete(
                        refresh_tokens::table.filter(refresh_tokens::digest.eq_any(&refresh)),
                    )
                    .execute(conn)?;
                    let revoked: Vec<String> = revoked_tokens::table
                        .filter(revoked_tokens::expire_time.lt(now))
                        .limit(batch)
                        .select(revoked_tokens::jti)
                        .load(conn)?;
                    n += diesel::delete(
                        revoked_tokens::table.filter(revoked_tokens::jti.eq_any(&revoked)),
                    )
                    .execute(conn)?;
                    Ok(n)
                })
                .await?;
            purged += n as u64;
            if n == 0 {
                return Ok(purged);
            }
        }
    }
}
