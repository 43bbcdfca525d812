//! The OAuth clients repository, and client authentication on top of it
//! for the token endpoint.
//!
//! A client bound to a service account acts as it (`client_credentials`),
//! so every write to such a client runs the caller's guard on that
//! account's roles, read in the write's transaction: an editor may not
//! create, change, rotate or delete a client acting as an admin, or its
//! secret would make the editor one.

use std::{sync::Arc, time::Duration};

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper};
use tollgate::tollgate::v1::{
    OAuthClient,
    o_auth_client::{ClientType as ProtoClientType, State},
};

use super::{
    DbConnection, Store, Tx,
    filter::{apply_op, int, small, text, unknown},
    organizations,
    principals::load_any,
    schema::{authorization_codes, oauth_clients, refresh_tokens},
    versioned::{Lock, Versioned, current, delete_versioned, inserted, lock_row, update_versioned},
};
use crate::{
    domain::{
        Error, Result, Violations,
        authz::Roles,
        etag,
        filter::{FieldType, Predicate},
        names::{ClientName, PrincipalKind, PrincipalName, generate_id},
        now_micros,
        oauth_client::{
            ClientSecret, ClientType, Combination, PresentedSecret, check_combination, mint_secret,
        },
        page::PageRequest,
        scope::{Scope, Scopes},
        timestamp,
    },
    events::{After, EventKind, WriteContext},
};

const ACTIVE: i16 = State::Active as i16;

/// The request field of the client, for violations found in the store.
const FIELD: &str = "oauth_client";

/// The fields ListOAuthClients filters on; `list_oauth_clients` matches
/// each of them.
pub const FILTERS: &[(&str, FieldType)] = &[
    (
        "state",
        FieldType::Enum {
            values: &[State::Active as i32, State::Disabled as i32],
            name: |v| State::try_from(v).ok().map(|s| s.as_str_name()),
        },
    ),
    (
        "client_type",
        FieldType::Enum {
            values: &[
                ProtoClientType::Confidential as i32,
                ProtoClientType::Public as i32,
            ],
            name: |v| ProtoClientType::try_from(v).ok().map(|s| s.as_str_name()),
        },
    ),
    ("display_name", FieldType::Text),
    ("create_time", FieldType::Timestamp),
];

/// A stored client: digests of its secrets, never the secrets.
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = oauth_clients)]
pub struct OAuthClientRow {
    /// The organization.
    pub org_id: String,
    /// The id in `…/clients/{client_id}`.
    pub client_id: String,
    /// Unique forever.
    pub uid: String,
    /// Shown on the consent page.
    pub display_name: String,
    /// Free text.
    pub description: String,
    /// `ClientType` as stored.
    pub client_type: i16,
    /// `OAuthClient.State` as stored.
    pub state: i16,
    /// Space-separated, exactly as registered.
    pub redirect_uris: String,
    /// Space-separated.
    pub grant_types: String,
    /// Space-separated.
    pub scopes: String,
    /// Space-separated.
    pub audiences: String,
    /// Seconds.
    pub access_token_ttl: i64,
    /// Seconds.
    pub refresh_token_ttl: i64,
    /// The id of the service account of `org_id` the client acts as.
    pub service_account: Option<String>,
    /// `EdDSA`, `ES256` or `RS256`.
    pub signing_algorithm: String,
    /// Hex SHA-256 of the current secret; `None` for a public client.
    pub secret_digest: Option<String>,
    /// Hex SHA-256 of the secret before the last rotation.
    pub previous_secret_digest: Option<String>,
    /// When the previous secret stops working (microseconds).
    pub previous_secret_expire_time: Option<i64>,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
    /// Bumped by every change.
    pub revision: i64,
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ').filter(|x| !x.is_empty())
}

fn owned_list(s: &str) -> Vec<String> {
    list(s).map(str::to_owned).collect()
}

fn seconds(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

impl OAuthClientRow {
    /// The client's resource name, which is also its OAuth `client_id`.
    pub fn name(&self) -> ClientName {
        ClientName {
            org: self.org_id.clone(),
            client: self.client_id.clone(),
        }
    }

    /// Where the authorize endpoint may send users back: compare exactly.
    pub fn redirect_uris(&self) -> impl Iterator<Item = &str> {
        list(&self.redirect_uris)
    }

    /// Whether the client may use `grant_type` (as sent to the token
    /// endpoint).
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        list(&self.grant_types).any(|g| g == grant_type)
    }

    /// The scopes the client may ask for; a request without `scope` gets
    /// all of them. Unknown stored entries (a newer version's) are dropped.
    pub fn allowed_scopes(&self) -> Vec<Scope> {
        list(&self.scopes).filter_map(Scope::parse).collect()
    }

    /// The audiences the client may ask tokens for, besides Tollgate's.
    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        list(&self.audiences)
    }

    /// Lifetime of its access and ID tokens.
    pub fn access_token_ttl(&self) -> Duration {
        seconds(self.access_token_ttl)
    }

    /// Lifetime of a refresh family, from the sign-in that started it.
    pub fn refresh_token_ttl(&self) -> Duration {
        seconds(self.refresh_token_ttl)
    }

    /// The JWS `alg` of its tokens.
    pub fn signing_algorithm(&self) -> &str {
        &self.signing_algorithm
    }

    /// The service account it acts as for `client_credentials`.
    pub fn service_account(&self) -> Option<PrincipalName> {
        self.service_account.as_ref().map(|id| PrincipalName {
            org: self.org_id.clone(),
            kind: PrincipalKind::ServiceAccount,
            id: id.clone(),
        })
    }

    /// Whether it is a public client (no secret; PKCE required).
    pub fn is_public(&self) -> bool {
        self.client_type == ClientType::Public.code()
    }

    /// Whether it gets tokens at all.
    pub fn is_active(&self) -> bool {
        self.state == ACTIVE
    }

    /// The client as the API shows it: never a secret or a digest.
    pub fn to_proto(&self) -> OAuthClient {
        OAuthClient {
            name: self.name().to_string(),
            uid: self.uid.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            client_type: i32::from(self.client_type),
            state: i32::from(self.state),
            redirect_uris: owned_list(&self.redirect_uris),
            grant_types: owned_list(&self.grant_types),
            scopes: owned_list(&self.scopes),
            audiences: owned_list(&self.audiences),
            access_token_ttl: Some(prost_types::Duration {
                seconds: self.access_token_ttl,
                nanos: 0,
            }),
            refresh_token_ttl: Some(prost_types::Duration {
                seconds: self.refresh_token_ttl,
                nanos: 0,
            }),
            service_account: self
                .service_account()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            signing_algorithm: self.signing_algorithm.clone(),
            secret: String::new(),
            previous_secret_expire_time: self
                .previous_secret_digest
                .as_ref()
                .and(self.previous_secret_expire_time)
                .map(timestamp),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            etag: Versioned::etag(self),
        }
    }

    /// Whether `secret` is the current secret, or the previous one within
    /// its grace. Both digests are compared in constant time, always.
    fn secret_matches(&self, secret: &str) -> bool {
        let presented = PresentedSecret::new(secret);
        let current = self
            .secret_digest
            .as_deref()
            .is_some_and(|d| presented.matches(d));
        let previous = self
            .previous_secret_digest
            .as_deref()
            .is_some_and(|d| presented.matches(d))
            && self
                .previous_secret_expire_time
                .is_some_and(|t| t > now_micros());
        current | previous
    }
}

impl Versioned for OAuthClientRow {
    type Name = ClientName;

    fn load(conn: &mut DbConnection, name: &ClientName, lock: Lock) -> Result<Option<Self>> {
        if lock != Lock::None
            && !lock_row(
                conn,
                "oauth_clients",
                &[("org_id", &name.org), ("client_id", &name.client)],
                lock,
            )?
        {
            return Ok(None);
        }
        Ok(oauth_clients::table
            .find((&name.org, &name.client))
            .select(OAuthClientRow::as_select())
            .first(conn)
            .optional()?)
    }

    fn etag(&self) -> String {
        etag(&self.uid, self.revision)
    }

    fn org(&self) -> &str {
        &self.org_id
    }

    fn after(&self) -> After {
        After::OauthClient(self.to_proto())
    }
}

/// Disables, in the caller's transaction, every active client of `org`
/// acting as service account `sa_id`, which is being deleted: a client
/// must not silently act as a service account later re-created under the
/// same name (with other roles). Each gets its `oauthClient.updated`
/// event; an admin re-enables it after choosing its service account again.
pub(crate) fn disable_clients_of(tx: &mut Tx<'_>, org: &str, sa_id: &str) -> Result<()> {
    let bound: Vec<OAuthClientRow> = oauth_clients::table
        .filter(oauth_clients::org_id.eq(org))
        .filter(oauth_clients::service_account.eq(sa_id))
        .filter(oauth_clients::state.eq(State::Active as i16))
        .select(OAuthClientRow::as_select())
        .load(tx.conn)?;
    let now = now_micros();
    for row in bound {
        diesel::update(oauth_clients::table.find((&row.org_id, &row.client_id)))
            .set((
                oauth_clients::state.eq(State::Disabled as i16),
                oauth_clients::update_time.eq(now),
                oauth_clients::revision.eq(row.revision + 1),
            ))
            .execute(tx.conn)?;
        let before = row.after();
        let after = OAuthClientRow {
            state: State::Disabled as i16,
            update_time: now,
            revision: row.revision + 1,
            ..row
        };
        let resource = after.name().to_string();
        tx.emit_change(
            EventKind::OAuthClientUpdated,
            org,
            resource,
            &before,
            after.after(),
        )?;
    }
    Ok(())
}

/// A client to create: the uid, timestamps, first revision and (for a
/// confidential client) the secret are made at insert.
#[derive(Debug, Clone)]
pub struct NewOAuthClient {
    /// Its name; the id was chosen or generated by the caller.
    pub name: ClientName,
    /// Shown on the consent page.
    pub display_name: String,
    /// Free text.
    pub description: String,
    /// Confidential or public.
    pub client_type: ClientType,
    /// `OAuthClient.State`.
    pub state: i16,
    /// Checked, exactly as sent.
    pub redirect_uris: Vec<String>,
    /// Checked grant types.
    pub grant_types: Vec<&'static str>,
    /// Parsed scopes.
    pub scopes: Vec<Scope>,
    /// Checked audiences.
    pub audiences: Vec<String>,
    /// Seconds.
    pub access_token_ttl: i64,
    /// Seconds.
    pub refresh_token_ttl: i64,
    /// The id of a service account of the same organization.
    pub service_account: Option<String>,
    /// A checked algorithm.
    pub signing_algorithm: &'static str,
}

impl NewOAuthClient {
    /// The row to insert and, for a confidential client, its secret.
    fn into_row(self) -> (OAuthClientRow, Option<ClientSecret>) {
        let now = now_micros();
        let minted = (self.client_type == ClientType::Confidential).then(mint_secret);
        let (secret_digest, secret) = match minted {
            Some(m) => (Some(m.digest), Some(m.secret)),
            None => (None, None),
        };
        let row = OAuthClientRow {
            org_id: self.name.org,
            client_id: self.name.client,
            uid: generate_id(),
            display_name: self.display_name,
            description: self.description,
            client_type: self.client_type.code(),
            state: self.state,
            redirect_uris: self.redirect_uris.join(" "),
            grant_types: self.grant_types.join(" "),
            scopes: Scopes::join(&self.scopes),
            audiences: self.audiences.join(" "),
            access_token_ttl: self.access_token_ttl,
            refresh_token_ttl: self.refresh_token_ttl,
            service_account: self.service_account,
            signing_algorithm: self.signing_algorithm.to_owned(),
            secret_digest,
            previous_secret_digest: None,
            previous_secret_expire_time: None,
            create_time: now,
            update_time: now,
            revision: 1,
        };
        (row, secret)
    }
}

/// The mutable fields of a client, in stored form; `None` leaves a field
/// unchanged. The store checks the combination with what stays.
#[derive(Debug, Default, Clone, diesel::AsChangeset)]
#[diesel(table_name = oauth_clients)]
pub struct OAuthClientChanges {
    /// A new display name.
    pub display_name: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// A new `OAuthClient.State`.
    pub state: Option<i16>,
    /// Space-separated redirect URIs.
    pub redirect_uris: Option<String>,
    /// Space-separated grant types.
    pub grant_types: Option<String>,
    /// Space-separated scopes.
    pub scopes: Option<String>,
    /// Space-separated audiences.
    pub audiences: Option<String>,
    /// Seconds.
    pub access_token_ttl: Option<i64>,
    /// Seconds.
    pub refresh_token_ttl: Option<i64>,
    /// `Some(None)` unbinds the service account.
    pub service_account: Option<Option<String>>,
    /// A checked algorithm.
    pub signing_algorithm: Option<String>,
}

/// Why a client failed to authenticate, as the token endpoint may tell
/// it: never which check failed (the reason is logged at debug).
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// Unknown, disabled, in a suspended organization, or a wrong,
    /// missing or unexpected secret: RFC 6749's `invalid_client`.
    #[error("client authentication failed")]
    InvalidClient,
    /// Storage failed; the client may retry (`server_error` or
    /// `temporarily_unavailable`).
    #[error(transparent)]
    Storage(#[from] Error),
}

impl From<ClientAuthError> for Error {
    fn from(e: ClientAuthError) -> Self {
        match e {
            ClientAuthError::InvalidClient => {
                Error::Unauthenticated("client authentication failed".into())
            }
            ClientAuthError::Storage(e) => e,
        }
    }
}

/// The roles of service account `sa` of `org`, read with `lock`; an
/// INVALID_ARGUMENT naming the field when it does not exist.
fn bound_roles(conn: &mut DbConnection, org: &str, sa: &str, lock: Lock) -> Result<Roles> {
    let name = PrincipalName {
        org: org.to_owned(),
        kind: PrincipalKind::ServiceAccount,
        id: sa.to_owned(),
    };
    match load_any(conn, &name, lock)? {
        Some((roles, _, _)) => Ok(roles),
        None => Err(Error::invalid(
            format!("{FIELD}.service_account"),
            format!("{name} does not exist"),
        )),
    }
}

/// Runs `guard` on the roles of the service account `cur` acts as, if it
/// still exists (a deleted one grants nothing to guard).
fn guard_bound(
    conn: &mut DbConnection,
    cur: &OAuthClientRow,
    guard: &dyn Fn(&Roles) -> Result<()>,
) -> Result<()> {
    if let Some(sa) = cur.service_account()
        && let Some((roles, _, _)) = load_any(conn, &sa, Lock::None)?
    {
        guard(&roles)?;
    }
    Ok(())
}

/// Refuses an update whose result breaks the combination rules
/// (`domain::oauth_client::check_combination`).
fn check_merged(cur: &OAuthClientRow, ch: &OAuthClientChanges) -> Result<()> {
    let client_type = ClientType::from_code(i32::from(cur.client_type))
        .ok_or_else(|| Error::Internal(format!("client {} has a corrupt type", cur.client_id)))?;
    let uris = ch.redirect_uris.as_deref().unwrap_or(&cur.redirect_uris);
    let grants: Vec<&str> = list(ch.grant_types.as_deref().unwrap_or(&cur.grant_types)).collect();
    let has_service_account = match &ch.service_account {
        Some(sa) => sa.is_some(),
        None => cur.service_account.is_some(),
    };
    let mut v = Violations::default();
    check_combination(
        &mut v,
        FIELD,
        &Combination {
            client_type,
            redirect_uris: list(uris).count(),
            grant_types: &grants,
            has_service_account,
        },
    );
    v.into_result()
}

impl Store {
    /// Creates a client in an existing organization; returns it and, for a
    /// confidential client, its only copy of the secret. A bound service
    /// account must exist (and stays, on PostgreSQL, until commit);
    /// `guard` sees its roles.
    pub async fn create_oauth_client(
        &self,
        ctx: &WriteContext,
        new: NewOAuthClient,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
    ) -> Result<(OAuthClientRow, Option<ClientSecret>)> {
        self.write(ctx, move |tx| {
            organizations::require(tx.conn, &new.name.org)?;
            if let Some(sa) = &new.service_account {
                guard(&bound_roles(tx.conn, &new.name.org, sa, Lock::Share)?)?;
            }
            insert(tx, new)
        })
        .await
    }

    /// Reads a client.
    pub async fn get_oauth_client(&self, name: &ClientName) -> Result<OAuthClientRow> {
        let n = name.clone();
        self.db
            .run(move |conn| OAuthClientRow::load(conn, &n, Lock::None))
            .await?
            .ok_or_else(|| Error::not_found(name.to_string()))
    }

    /// One page of an organization's clients in id order.
    pub async fn list_oauth_clients(
        &self,
        org: String,
        filter: Vec<Predicate>,
        page: PageRequest,
    ) -> Result<(Vec<OAuthClientRow>, String)> {
        let limit = page.fetch_limit();
        let after = page.after.clone();
        let mut rows = self
            .db
            .run(move |conn| {
                let mut q = oauth_clients::table
                    .select(OAuthClientRow::as_select())
                    .filter(oauth_clients::org_id.eq(org))
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(oauth_clients::client_id.gt(after));
                }
                for p in &filter {
                    q = match p.field {
                        "state" => apply_op!(q, oauth_clients::state, p.op, small(p)?),
                        "client_type" => apply_op!(q, oauth_clients::client_type, p.op, small(p)?),
                        "display_name" => {
                            apply_op!(q, oauth_clients::display_name, p.op, text(p)?)
                        }
                        "create_time" => apply_op!(q, oauth_clients::create_time, p.op, int(p)?),
                        _ => return Err(unknown(p)),
                    };
                }
                Ok(q.order(oauth_clients::client_id.asc())
                    .limit(limit)
                    .load(conn)?)
            })
            .await?;
        let next = page.finish(&mut rows, |r| r.client_id.clone());
        Ok((rows, next))
    }

    /// Updates a client. The result must satisfy the combination rules; a
    /// newly bound service account must exist. `guard` sees the roles of
    /// the service account bound before and of the one bound after.
    pub async fn update_oauth_client(
        &self,
        ctx: &WriteContext,
        name: ClientName,
        sent_etag: String,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
        changes: OAuthClientChanges,
    ) -> Result<OAuthClientRow> {
        self.write(ctx, move |tx| {
            update_versioned(
                tx,
                &name,
                &sent_etag,
                &|_| Ok(()),
                |conn, cur: &OAuthClientRow| {
                    check_merged(cur, &changes)?;
                    guard_bound(conn, cur, &guard)?;
                    if let Some(Some(sa)) = &changes.service_account {
                        guard(&bound_roles(conn, &cur.org_id, sa, Lock::Share)?)?;
                    }
                    Ok(diesel::update(
                        oauth_clients::table
                            .find((&cur.org_id, &cur.client_id))
                            .filter(oauth_clients::revision.eq(cur.revision)),
                    )
                    .set((
                        &changes,
                        oauth_clients::update_time.eq(now_micros()),
                        oauth_clients::revision.eq(cur.revision + 1),
                    ))
                    .execute(conn)?)
                },
                EventKind::OAuthClientUpdated,
            )
        })
        .await
    }

    /// Deletes a client with its authorization codes and refresh tokens,
    /// so none of them works a moment longer.
    pub async fn delete_oauth_client(
        &self,
        ctx: &WriteContext,
        name: ClientName,
        sent_etag: String,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.write(ctx, move |tx| {
            delete_versioned(
                tx,
                &name,
                &sent_etag,
                &|_| Ok(()),
                |conn, cur: &OAuthClientRow| {
                    guard_bound(conn, cur, &guard)?;
                    diesel::delete(
                        authorization_codes::table
                            .filter(authorization_codes::org_id.eq(&cur.org_id))
                            .filter(authorization_codes::client_id.eq(&cur.client_id)),
                    )
                    .execute(conn)?;
                    diesel::delete(
                        refresh_tokens::table
                            .filter(refresh_tokens::org_id.eq(&cur.org_id))
                            .filter(refresh_tokens::client_id.eq(&cur.client_id)),
                    )
                    .execute(conn)?;
                    diesel::delete(oauth_clients::table.find((&cur.org_id, &cur.client_id)))
                        .execute(conn)?;
                    Ok(())
                },
                EventKind::OAuthClientDeleted,
            )
            .map(drop)
        })
        .await
    }

    /// Gives a confidential client a new secret; the current one keeps
    /// working for `grace_micros` (0: not at all). Only one previous secret
    /// is kept, so a second rotation ends the first one's grace. A public
    /// client is FAILED_PRECONDITION.
    pub async fn rotate_oauth_client_secret(
        &self,
        ctx: &WriteContext,
        name: ClientName,
        sent_etag: String,
        grace_micros: i64,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
    ) -> Result<(OAuthClientRow, ClientSecret)> {
        self.write(ctx, move |tx| {
            let resource = name.to_string();
            let cur: OAuthClientRow = current(tx, &name, &resource, &sent_etag, &|_| Ok(()))?;
            if cur.is_public() {
                return Err(Error::FailedPrecondition {
                    reason: "PUBLIC_CLIENT",
                    message: format!("{resource} is a public client: it has no secret to rotate"),
                });
            }
            guard_bound(tx.conn, &cur, &guard)?;
            let minted = mint_secret();
            let now = now_micros();
            let (previous, previous_expire) = match (&cur.secret_digest, grace_micros) {
                (Some(d), g) if g > 0 => (Some(d.clone()), Some(now.saturating_add(g))),
                _ => (None, None),
            };
            let n = diesel::update(
                oauth_clients::table
                    .find((&cur.org_id, &cur.client_id))
                    .filter(oauth_clients::revision.eq(cur.revision)),
            )
            .set((
                oauth_clients::secret_digest.eq(Some(minted.digest)),
                oauth_clients::previous_secret_digest.eq(previous),
                oauth_clients::previous_secret_expire_time.eq(previous_expire),
                oauth_clients::update_time.eq(now),
                oauth_clients::revision.eq(cur.revision + 1),
            ))
            .execute(tx.conn)?;
            if n == 0 {
                return Err(Error::Aborted { resource });
            }
            let row = OAuthClientRow::load(tx.conn, &name, Lock::None)?
                .ok_or_else(|| Error::not_found(&resource))?;
            tx.emit_change(
                EventKind::OAuthClientSecretRotated,
                &row.org_id,
                resource,
                &cur.after(),
                row.after(),
            )?;
            Ok((row, minted.secret))
        })
        .await
    }

    /// Authenticates a client at the token endpoint. `client_id` is the
    /// client's resource name. A confidential client must present its
    /// current secret or the previous one within its grace; a public client
    /// must present none. Every refusal is the same
    /// [`ClientAuthError::InvalidClient`]; the reason is logged at debug.
    /// Served from the cache, so a good client costs no query.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: Option<&str>,
    ) -> Result<Arc<OAuthClientRow>, ClientAuthError> {
        let refuse = |reason: &'static str| {
            tracing::debug!(client_id, reason, "client authentication failed");
            ClientAuthError::InvalidClient
        };
        let row = self.usable_client(client_id).await?.map_err(refuse)?;
        let good = match (row.is_public(), secret) {
            (true, None) => Ok(()),
            (true, Some(_)) => Err("a public client presented a secret"),
            (false, None) => Err("no secret presented"),
            (false, Some(s)) if row.secret_matches(s) => Ok(()),
            (false, Some(_)) => Err("wrong secret"),
        };
        good.map_err(refuse)?;
        Ok(row)
    }

    /// A client the authorize endpoint may serve, by `client_id` (its
    /// resource name), through the cache: NOT_FOUND when it is unknown,
    /// disabled, or in a suspended organization, alike.
    pub async fn get_oauth_client_by_id(&self, client_id: &str) -> Result<Arc<OAuthClientRow>> {
        self.usable_client(client_id).await?.map_err(|reason| {
            tracing::debug!(client_id, reason, "client refused");
            Error::not_found(client_id)
        })
    }

    /// The client named `client_id` if it is active in an active
    /// organization, else why not.
    async fn usable_client(
        &self,
        client_id: &str,
    ) -> Result<std::result::Result<Arc<OAuthClientRow>, &'static str>> {
        let Ok(name) = ClientName::parse("client_id", client_id) else {
            return Ok(Err("malformed client_id"));
        };
        let cached = self.caches.clients.get(client_id);
        self.caches.lookups.clients.record(cached.is_some());
        let row = match cached {
            Some(hit) => hit,
            None => {
                let n = name.clone();
                let row = self
                    .db
                    .run(move |conn| OAuthClientRow::load(conn, &n, Lock::None))
                    .await?
                    .map(Arc::new);
                self.caches
                    .clients
                    .insert(client_id.to_owned(), row.clone());
                row
            }
        };
        let Some(row) = row else {
            return Ok(Err("unknown client"));
        };
        if !row.is_active() {
            return Ok(Err("client disabled"));
        }
        match self.get_organization(&name.org).await {
            Ok(org) if org.row.is_active() => Ok(Ok(row)),
            Ok(_) => Ok(Err("organization suspended")),
            Err(Error::NotFound { .. }) => Ok(Err("organization gone")),
            Err(e) => Err(e),
        }
    }
}

/// Inserts a client and its event.
fn insert(tx: &mut Tx<'_>, new: NewOAuthClient) -> Result<(OAuthClientRow, Option<ClientSecret>)> {
    let (row, secret) = new.into_row();
    let name = row.name().to_string();
    inserted(
        diesel::insert_into(oauth_clients::table)
            .values(&row)
            .execute(tx.conn),
        || name.clone(),
    )?;
    tx.emit(
        EventKind::OAuthClientCreated,
        &row.org_id,
        name,
        row.after(),
    )?;
    Ok((row, secret))
}
