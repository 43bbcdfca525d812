//! The signing keys repository: rows of `signing_keys`, whose private part
//! is encrypted by `oauth::kek` before it gets here. Creation and rotation
//! go through the write path (one event per key, organization `root`) under
//! a lock, so replicas starting or rotating at once make one key, not two.

use diesel::{
    BoolExpressionMethods, ExpressionMethods, QueryDsl, RunQueryDsl, SelectableHelper,
    sql_types::Integer, sql_types::Text,
};
use tollgate::tollgate::v1::{SigningKey, signing_key::State};

use super::{DbConnection, Store, Tx, schema::signing_keys};
use crate::{
    domain::{Error, Result, authz::ROOT_ORG, timestamp},
    events::{After, EventKind, WriteContext},
};

/// First key of the advisory lock that serializes signing-key writers on
/// PostgreSQL ("tk"); the outbox's order locks use another.
const KEYS_LOCK_SPACE: i32 = 0x746b;

/// A stored signing key. `private_key` is ciphertext (see `oauth::kek`).
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = signing_keys)]
pub struct SigningKeyRow {
    /// The JWS `kid`.
    pub kid: String,
    /// `EdDSA`, `ES256` or `RS256`.
    pub algorithm: String,
    /// The public JWK, JSON.
    pub public_jwk: String,
    /// The encrypted PKCS#8 private key (base64 nonce ‖ ciphertext ‖ tag).
    pub private_key: String,
    /// The fingerprint of the key-encryption key that encrypted it.
    pub kek_id: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Signs from then on.
    pub activate_time: i64,
    /// Stops signing then, when set.
    pub deactivate_time: Option<i64>,
    /// Leaves the JWKS then, when set.
    pub retire_time: Option<i64>,
}

impl SigningKeyRow {
    /// Where the key is in its life at `now` (microseconds).
    pub fn state(&self, now: i64) -> State {
        if self.retire_time.is_some_and(|t| t <= now) {
            State::Retired
        } else if self.deactivate_time.is_some_and(|t| t <= now) {
            State::Retiring
        } else if self.activate_time > now {
            State::Pending
        } else {
            State::Active
        }
    }

    /// Whether it is in the JWKS at `now`.
    pub fn is_published(&self, now: i64) -> bool {
        self.retire_time.is_none_or(|t| t > now)
    }

    /// The key as the API shows it at `now`: public parts only.
    pub fn to_proto(&self, now: i64) -> SigningKey {
        let jwk = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
            &self.public_jwk,
        )
        .map(|m| crate::oauth::jwk::to_struct(&m))
        .unwrap_or_else(|e| {
            tracing::error!(kid = %self.kid, error = %e, "signing key with an unreadable JWK");
            prost_types::Struct::default()
        });
        SigningKey {
            name: format!("signingKeys/{}", self.kid),
            algorithm: self.algorithm.clone(),
            state: self.state(now) as i32,
            public_jwk: Some(jwk),
            create_time: Some(timestamp(self.create_time)),
            activate_time: Some(timestamp(self.activate_time)),
            deactivate_time: self.deactivate_time.map(timestamp),
            retire_time: self.retire_time.map(timestamp),
        }
    }
}

/// Takes the signing-keys lock until the transaction ends (PostgreSQL);
/// SQLite's write transaction already holds the database's write lock.
fn lock(conn: &mut DbConnection) -> Result<()> {
    if let DbConnection::Postgres(pg) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind::<Integer, _>(KEYS_LOCK_SPACE)
            .bind::<Text, _>("signing_keys")
            .execute(pg)?;
    }
    Ok(())
}

fn published(conn: &mut DbConnection, now: i64) -> Result<Vec<SigningKeyRow>> {
    Ok(signing_keys::table
        .filter(
            signing_keys::retire_time
                .is_null()
                .or(signing_keys::retire_time.gt(now)),
        )
        .order((signing_keys::activate_time.desc(), signing_keys::kid.desc()))
        .select(SigningKeyRow::as_select())
        .load(conn)?)
}

fn load(conn: &mut DbConnection, kid: &str) -> Result<SigningKeyRow> {
    Ok(signing_keys::table
        .find(kid)
        .select(SigningKeyRow::as_select())
        .first(conn)?)
}

fn insert(tx: &mut Tx<'_>, row: &SigningKeyRow, now: i64) -> Result<()> {
    diesel::insert_into(signing_keys::table)
        .values(row)
        .execute(tx.conn)?;
    tx.emit(
        EventKind::SigningKeyCreated,
        ROOT_ORG,
        format!("signingKeys/{}", row.kid),
        After::SigningKey(row.to_proto(now)),
    )
}

/// What a rotation asks of the store.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The new key (its `activate_time` set).
    pub new: SigningKeyRow,
    /// When the keys it replaces leave the JWKS.
    pub retire_time: i64,
    /// Rotate only if the newest key of the algorithm was created at or
    /// before this time (the schedule; re-checked under the lock, so two
    /// replicas do not both rotate). `None`: rotate regardless.
    pub only_if_created_before: Option<i64>,
}

impl Store {
    /// How many signing keys exist at all (retired ones included).
    pub async fn count_signing_keys(&self) -> Result<i64> {
        self.db
            .run(|conn| Ok(signing_keys::table.count().get_result(conn)?))
            .await
    }

    /// The keys in the JWKS at `now`, latest activation first.
    pub async fn published_signing_keys(&self, now: i64) -> Result<Vec<SigningKeyRow>> {
        self.db.run(move |conn| published(conn, now)).await
    }

    /// Every key, or only the published ones, newest first.
    pub async fn list_signing_keys(
        &self,
        show_retired: bool,
        now: i64,
    ) -> Result<Vec<SigningKeyRow>> {
        self.db
            .run(move |conn| {
                let mut query = signing_keys::table
                    .select(SigningKeyRow::as_select())
                    .order((signing_keys::create_time.desc(), signing_keys::kid.desc()))
                    .into_boxed();
                if !show_retired {
                    query = query.filter(
                        signing_keys::retire_time
                            .is_null()
                            .or(signing_keys::retire_time.gt(now)),
                    );
                }
                Ok(query.load(conn)?)
            })
            .await
    }

    /// Inserts each of `candidates` whose algorithm has no published key
    /// at `now`, under the signing-keys lock; returns those inserted. Two
    /// replicas starting at once each offer a set and only the first
    /// lands.
    pub async fn create_first_signing_keys(
        &self,
        candidates: Vec<SigningKeyRow>,
        now: i64,
    ) -> Result<Vec<SigningKeyRow>> {
        self.write(&WriteContext::system("signing-keys"), move |tx| {
            lock(tx.conn)?;
            let existing = published(tx.conn, now)?;
            let mut inserted = Vec::new();
            for row in candidates {
                if existing.iter().any(|k| k.algorithm == row.algorithm) {
                    continue;
                }
                insert(tx, &row, now)?;
                inserted.push(row);
            }
            Ok(inserted)
        })
        .await
    }

    /// Publishes `rotation.new` and schedules the keys of its algorithm
    /// that have no successor yet to stop signing at its activation and
    /// leave the JWKS at `rotation.retire_time`. `None` when the schedule
    /// condition no longer holds (another replica rotated first).
    pub async fn rotate_signing_key(
        &self,
        ctx: &WriteContext,
        rotation: Rotation,
        now: i64,
    ) -> Result<Option<SigningKeyRow>> {
        self.write(ctx, move |tx| {
            lock(tx.conn)?;
            let Rotation {
                new,
                retire_time,
                only_if_created_before,
            } = rotation;
            let alg = new.algorithm.clone();
            if let Some(cutoff) = only_if_created_before {
                let newest: Option<i64> = signing_keys::table
                    .filter(signing_keys::algorithm.eq(&alg))
                    .select(diesel::dsl::max(signing_keys::create_time))
                    .first(tx.conn)?;
                if newest.is_some_and(|t| t > cutoff) {
                    return Ok(None);
                }
            }
            let replaced: Vec<String> = signing_keys::table
                .filter(signing_keys::algorithm.eq(&alg))
                .filter(signing_keys::deactivate_time.is_null())
                .select(signing_keys::kid)
                .load(tx.conn)?;
            for kid in &replaced {
                let before = After::SigningKey(load(tx.conn, kid)?.to_proto(now));
                let n = diesel::update(signing_keys::table.find(kid))
                    .filter(signing_keys::deactivate_time.is_null())
                    .set((
                        signing_keys::deactivate_time.eq(new.activate_time),
                        signing_keys::retire_time.eq(retire_time),
                    ))
                    .execute(tx.conn)?;
                if n != 1 {
                    return Err(Error::Internal(format!(
                        "signing key {kid} changed under the lock"
                    )));
                }
                let row = load(tx.conn, kid)?;
                tx.emit_change(
                    EventKind::SigningKeyReplaced,
                    ROOT_ORG,
                    format!("signingKeys/{kid}"),
                    &before,
                    After::SigningKey(row.to_proto(now)),
                )?;
            }
            insert(tx, &new, now)?;
            Ok(Some(new))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(activate: i64, deactivate: Option<i64>, retire: Option<i64>) -> SigningKeyRow {
        SigningKeyRow {
            kid: "k".into(),
            algorithm: "EdDSA".into(),
            public_jwk: r#"{"kty":"OKP","x":"abc"}"#.into(),
            private_key: "secret".into(),
            kek_id: "0".into(),
            create_time: 0,
            activate_time: activate,
            deactivate_time: deactivate,
            retire_time: retire,
        }
    }

    #[test]
    fn state_follows_the_times() {
        let r = row(10, Some(20), Some(30));
        assert_eq!(r.state(5), State::Pending);
        assert_eq!(r.state(10), State::Active);
        assert_eq!(r.state(20), State::Retiring);
        assert_eq!(r.state(30), State::Retired);
        assert!(r.is_published(29) && !r.is_published(30));
        assert_eq!(row(0, None, None).state(i64::MAX), State::Active);
    }

    #[test]
    fn the_proto_has_no_private_part() {
        let p = row(1, None, None).to_proto(2);
        assert_eq!(p.name, "signingKeys/k");
        assert_eq!(p.state, State::Active as i32);
        let jwk = p.public_jwk.clone().unwrap();
        assert!(jwk.fields.contains_key("x"));
        assert!(!format!("{p:?}").contains("secret"));
    }
}
