//! The rate-limit policies repository, and the reads the enforcement
//! engine makes: every policy compiled ([`Store::all_rules`]) and a cheap
//! fingerprint of the table ([`Store::fingerprint`]) that tells a replica
//! when another one changed something.
//!
//! The fingerprint is `(COUNT(*), MAX(update_time))`. A create or a delete
//! changes the count; for an update to change the maximum even when
//! replicas' clocks disagree, every write stamps `update_time` with
//! `max(now, MAX(update_time) + 1)` read in its transaction: each write
//! raises the maximum, so no change, on any replica, leaves the
//! fingerprint as it was.

use std::collections::{BTreeMap, HashMap};

use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper,
    dsl::{count_star, max},
};
use tollgate::tollgate::v1::{RateLimit, RateLimitPolicy, RateLimitQuota, RateLimitSelector};

use super::{
    DbConnection, Store, Tx, organizations,
    schema::rate_limit_policies,
    versioned::{Lock, Versioned, delete_versioned, inserted, lock_row, update_versioned},
};
use crate::{
    domain::{
        Error, Result, Violations, etag,
        names::{RateLimitPolicyName, generate_id},
        now_micros,
        page::PageRequest,
        rate_limit_policy::{
            Combination, FailureMode, KeyBy, MethodMatch, PolicySpec, Quota, QuotaPeriod, Rate,
            RateAlgorithm, RateLimitRule, RatePeriod, Selector, check_combination,
        },
        timestamp,
    },
    events::{After, EventKind, WriteContext},
};

/// The request field of the policy, for violations found in the store.
const FIELD: &str = "rate_limit_policy";

/// A stored policy (see the migration for the encoding of each column).
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = rate_limit_policies)]
pub struct RateLimitPolicyRow {
    /// The organization.
    pub org_id: String,
    /// The id in `…/rateLimitPolicies/{policy_id}`.
    pub policy_id: String,
    /// Unique forever; counters are keyed by it.
    pub uid: String,
    /// Free text.
    pub display_name: String,
    /// A method path or prefix; `None` for any.
    pub method: Option<String>,
    /// A principal's resource name.
    pub principal: Option<String>,
    /// An API key's resource name.
    pub api_key: Option<String>,
    /// An OAuth client's resource name.
    pub oauth_client: Option<String>,
    /// JSON object of header names and values.
    pub headers: String,
    /// JSON object of descriptor keys and values.
    pub descriptors: String,
    /// Units per period, if the policy has a rate.
    pub rate_limit: Option<i64>,
    /// `RateLimit.Period`.
    pub rate_period: Option<i16>,
    /// `None`: the limit.
    pub rate_burst: Option<i64>,
    /// Units per window, if the policy has a quota.
    pub quota_limit: Option<i64>,
    /// `RateLimitQuota.Period`.
    pub quota_period: Option<i16>,
    /// `RateLimitPolicy.Algorithm`, never 0.
    pub algorithm: i16,
    /// 0 or 1.
    pub shadow: i16,
    /// `RateLimitPolicy.FailureMode`, never 0.
    pub failure_mode: i16,
    /// `RateLimitPolicy.KeyBy`, never 0.
    pub key_by: i16,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch; raised by every write (see the module
    /// documentation).
    pub update_time: i64,
    /// Bumped by every change.
    pub revision: i64,
}

fn to_json(map: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes.
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}

fn from_json(s: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    serde_json::from_str(s).map_err(|e| format!("unreadable selector entries: {e}"))
}

impl RateLimitPolicyRow {
    /// The policy's resource name.
    pub fn name(&self) -> RateLimitPolicyName {
        RateLimitPolicyName {
            org: self.org_id.clone(),
            policy: self.policy_id.clone(),
        }
    }

    /// The stored policy read back into checked form; an error names what
    /// is unreadable (a row written by a newer version, or corrupted).
    pub fn spec(&self) -> std::result::Result<PolicySpec, String> {
        if let Some(m) = &self.method
            && MethodMatch::parse(m).is_none()
        {
            // Never a catch-all by accident.
            return Err(format!("unparseable method selector {m:?}"));
        }
        let code = |what: &str, c: Option<i16>| {
            c.map(i32::from).ok_or_else(|| format!("{what} is missing"))
        };
        let rate = match self.rate_limit {
            None => None,
            Some(limit) => Some(Rate {
                limit,
                period: RatePeriod::from_code(code("rate_period", self.rate_period)?)
                    .ok_or("unknown rate_period")?,
                burst: self.rate_burst,
            }),
        };
        let quota = match self.quota_limit {
            None => None,
            Some(limit) => Some(Quota {
                limit,
                period: QuotaPeriod::from_code(code("quota_period", self.quota_period)?)
                    .ok_or("unknown quota_period")?,
            }),
        };
        Ok(PolicySpec {
            display_name: self.display_name.clone(),
            selector: Selector {
                method: self.method.clone(),
                principal: self.principal.clone(),
                api_key: self.api_key.clone(),
                oauth_client: self.oauth_client.clone(),
                headers: from_json(&self.headers)?,
                descriptors: from_json(&self.descriptors)?,
            },
            rate,
            quota,
            algorithm: RateAlgorithm::from_code(i32::from(self.algorithm))
                .ok_or("unknown algorithm")?,
            shadow: self.shadow != 0,
            failure_mode: FailureMode::from_code(i32::from(self.failure_mode))
                .ok_or("unknown failure_mode")?,
            key_by: KeyBy::from_code(i32::from(self.key_by)).ok_or("unknown key_by")?,
        })
    }

    /// The policy compiled for the engine.
    pub fn to_rule(&self) -> std::result::Result<RateLimitRule, String> {
        Ok(RateLimitRule::compile(
            &self.uid,
            &self.name().to_string(),
            &self.org_id,
            &self.spec()?,
        ))
    }

    /// The policy as the API shows it. An unset selector is left out.
    pub fn to_proto(&self) -> RateLimitPolicy {
        let map = |s: &str| -> HashMap<String, String> {
            from_json(s).unwrap_or_default().into_iter().collect()
        };
        let selector = RateLimitSelector {
            method: self.method.clone().unwrap_or_default(),
            principal: self.principal.clone().unwrap_or_default(),
            api_key: self.api_key.clone().unwrap_or_default(),
            oauth_client: self.oauth_client.clone().unwrap_or_default(),
            headers: map(&self.headers),
            descriptors: map(&self.descriptors),
        };
        RateLimitPolicy {
            name: self.name().to_string(),
            uid: self.uid.clone(),
            display_name: self.display_name.clone(),
            selector: (selector != RateLimitSelector::default()).then_some(selector),
            limit: self.rate_limit.map(|limit| RateLimit {
                limit,
                period: i32::from(self.rate_period.unwrap_or_default()),
                burst: self.rate_burst,
            }),
            quota: self.quota_limit.map(|limit| RateLimitQuota {
                limit,
                period: i32::from(self.quota_period.unwrap_or_default()),
            }),
            algorithm: i32::from(self.algorithm),
            shadow: self.shadow != 0,
            failure_mode: i32::from(self.failure_mode),
            key_by: i32::from(self.key_by),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            etag: Versioned::etag(self),
        }
    }
}

impl Versioned for RateLimitPolicyRow {
    type Name = RateLimitPolicyName;

    fn load(
        conn: &mut DbConnection,
        name: &RateLimitPolicyName,
        lock: Lock,
    ) -> Result<Option<Self>> {
        if lock != Lock::None
            && !lock_row(
                conn,
                "rate_limit_policies",
                &[("org_id", &name.org), ("policy_id", &name.policy)],
                lock,
            )?
        {
            return Ok(None);
        }
        Ok(rate_limit_policies::table
            .find((&name.org, &name.policy))
            .select(RateLimitPolicyRow::as_select())
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
        After::RateLimitPolicy(self.to_proto())
    }
}

/// A policy to create: the uid, timestamps and first revision are made at
/// insert.
#[derive(Debug, Clone)]
pub struct NewRateLimitPolicy {
    /// Its name; the id was chosen or generated by the caller.
    pub name: RateLimitPolicyName,
    /// The checked policy.
    pub spec: PolicySpec,
}

/// The changes of an update, each field replaced whole; `None` leaves a
/// field unchanged. The store checks the combination with what stays.
#[derive(Debug, Default, Clone)]
pub struct RateLimitPolicyChanges {
    /// A new display name.
    pub display_name: Option<String>,
    /// A new selector (every selector field).
    pub selector: Option<Selector>,
    /// A new rate; `Some(None)` removes it.
    pub rate: Option<Option<Rate>>,
    /// A new quota; `Some(None)` removes it.
    pub quota: Option<Option<Quota>>,
    /// A new algorithm.
    pub algorithm: Option<RateAlgorithm>,
    /// A new shadow flag.
    pub shadow: Option<bool>,
    /// A new failure mode.
    pub failure_mode: Option<FailureMode>,
    /// A new key.
    pub key_by: Option<KeyBy>,
}

/// [`RateLimitPolicyChanges`] in stored form.
#[derive(Debug, Default, Clone, diesel::AsChangeset)]
#[diesel(table_name = rate_limit_policies)]
struct Changeset {
    display_name: Option<String>,
    method: Option<Option<String>>,
    principal: Option<Option<String>>,
    api_key: Option<Option<String>>,
    oauth_client: Option<Option<String>>,
    headers: Option<String>,
    descriptors: Option<String>,
    rate_limit: Option<Option<i64>>,
    rate_period: Option<Option<i16>>,
    rate_burst: Option<Option<i64>>,
    quota_limit: Option<Option<i64>>,
    quota_period: Option<Option<i16>>,
    algorithm: Option<i16>,
    shadow: Option<i16>,
    failure_mode: Option<i16>,
    key_by: Option<i16>,
}

impl From<&RateLimitPolicyChanges> for Changeset {
    fn from(ch: &RateLimitPolicyChanges) -> Self {
        let mut out = Changeset {
            display_name: ch.display_name.clone(),
            algorithm: ch.algorithm.map(RateAlgorithm::code),
            shadow: ch.shadow.map(i16::from),
            failure_mode: ch.failure_mode.map(FailureMode::code),
            key_by: ch.key_by.map(KeyBy::code),
            ..Changeset::default()
        };
        if let Some(s) = &ch.selector {
            out.method = Some(s.method.clone());
            out.principal = Some(s.principal.clone());
            out.api_key = Some(s.api_key.clone());
            out.oauth_client = Some(s.oauth_client.clone());
            out.headers = Some(to_json(&s.headers));
            out.descriptors = Some(to_json(&s.descriptors));
        }
        if let Some(rate) = &ch.rate {
            out.rate_limit = Some(rate.map(|r| r.limit));
            out.rate_period = Some(rate.map(|r| r.period.code()));
            out.rate_burst = Some(rate.and_then(|r| r.burst));
        }
        if let Some(quota) = &ch.quota {
            out.quota_limit = Some(quota.map(|q| q.limit));
            out.quota_period = Some(quota.map(|q| q.period.code()));
        }
        out
    }
}

/// Refuses an update whose result breaks the combination rules
/// (`domain::rate_limit_policy::check_combination`).
fn check_merged(cur: &RateLimitPolicyRow, ch: &RateLimitPolicyChanges) -> Result<()> {
    let spec = cur.spec().map_err(|e| {
        Error::Internal(format!(
            "rate-limit policy {} is unreadable: {e}",
            cur.name()
        ))
    })?;
    let c = Combination {
        has_rate: ch.rate.map_or(spec.rate.is_some(), |r| r.is_some()),
        has_quota: ch.quota.map_or(spec.quota.is_some(), |q| q.is_some()),
        algorithm: ch.algorithm.unwrap_or(spec.algorithm),
        key_by: ch.key_by.unwrap_or(spec.key_by),
        has_entries: ch.selector.as_ref().unwrap_or(&spec.selector).has_entries(),
    };
    let mut v = Violations::default();
    check_combination(&mut v, FIELD, &c);
    v.into_result()
}

/// The `update_time` of a write at `now`: now, or just above the table's
/// greatest, so that every write raises [`Store::fingerprint`]'s maximum.
/// On PostgreSQL, concurrent writers would read the same maximum and could
/// stamp the same time, so one update's commit could go unseen: writers of
/// policies queue on a table lock instead (they are rare; reads and the
/// fingerprint do not wait). SQLite writers are serialized already.
fn next_update_time(conn: &mut DbConnection, now: i64) -> Result<i64> {
    if let DbConnection::Postgres(pg) = conn {
        diesel::sql_query("LOCK TABLE rate_limit_policies IN SHARE ROW EXCLUSIVE MODE")
            .execute(pg)?;
    }
    let greatest: Option<i64> = rate_limit_policies::table
        .select(max(rate_limit_policies::update_time))
        .first(conn)?;
    Ok(greatest.map_or(now, |g| now.max(g.saturating_add(1))))
}

impl Store {
    /// Creates a policy in an existing organization; ALREADY_EXISTS when
    /// the id is taken.
    pub async fn create_rate_limit_policy(
        &self,
        ctx: &WriteContext,
        new: NewRateLimitPolicy,
    ) -> Result<RateLimitPolicyRow> {
        self.write(ctx, move |tx| {
            organizations::require(tx.conn, &new.name.org)?;
            insert(tx, new)
        })
        .await
    }

    /// Reads a policy.
    pub async fn get_rate_limit_policy(
        &self,
        name: &RateLimitPolicyName,
    ) -> Result<RateLimitPolicyRow> {
        let n = name.clone();
        self.db
            .run(move |conn| RateLimitPolicyRow::load(conn, &n, Lock::None))
            .await?
            .ok_or_else(|| Error::not_found(name.to_string()))
    }

    /// One page of an organization's policies in id order.
    pub async fn list_rate_limit_policies(
        &self,
        org: String,
        page: PageRequest,
    ) -> Result<(Vec<RateLimitPolicyRow>, String)> {
        let limit = page.fetch_limit();
        let after = page.after.clone();
        let mut rows = self
            .db
            .run(move |conn| {
                let mut q = rate_limit_policies::table
                    .select(RateLimitPolicyRow::as_select())
                    .filter(rate_limit_policies::org_id.eq(org))
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(rate_limit_policies::policy_id.gt(after));
                }
                Ok(q.order(rate_limit_policies::policy_id.asc())
                    .limit(limit)
                    .load(conn)?)
            })
            .await?;
        let next = page.finish(&mut rows, |r| r.policy_id.clone());
        Ok((rows, next))
    }

    /// Updates a policy; the result must satisfy the combination rules.
    pub async fn update_rate_limit_policy(
        &self,
        ctx: &WriteContext,
        name: RateLimitPolicyName,
        sent_etag: String,
        changes: RateLimitPolicyChanges,
    ) -> Result<RateLimitPolicyRow> {
        self.write(ctx, move |tx| {
            update_versioned(
                tx,
                &name,
                &sent_etag,
                &|_| Ok(()),
                |conn, cur: &RateLimitPolicyRow| {
                    check_merged(cur, &changes)?;
                    let now = next_update_time(conn, now_micros())?;
                    Ok(diesel::update(
                        rate_limit_policies::table
                            .find((&cur.org_id, &cur.policy_id))
                            .filter(rate_limit_policies::revision.eq(cur.revision)),
                    )
                    .set((
                        &Changeset::from(&changes),
                        rate_limit_policies::update_time.eq(now),
                        rate_limit_policies::revision.eq(cur.revision + 1),
                    ))
                    .execute(conn)?)
                },
                EventKind::RateLimitPolicyUpdated,
            )
        })
        .await
    }

    /// Deletes a policy; an empty `sent_etag` skips the etag check.
    pub async fn delete_rate_limit_policy(
        &self,
        ctx: &WriteContext,
        name: RateLimitPolicyName,
        sent_etag: String,
    ) -> Result<()> {
        self.write(ctx, move |tx| {
            delete_versioned(
                tx,
                &name,
                &sent_etag,
                &|_| Ok(()),
                |conn, cur: &RateLimitPolicyRow| {
                    diesel::delete(rate_limit_policies::table.find((&cur.org_id, &cur.policy_id)))
                        .execute(conn)?;
                    Ok(())
                },
                EventKind::RateLimitPolicyDeleted,
            )
            .map(drop)
        })
        .await
    }

    /// Every policy of every organization, compiled, ordered by
    /// organization id and then in matching order
    /// ([`RateLimitRule::precedence`]). A row this version cannot read (a
    /// newer version's) is left out with a warning rather than failing
    /// every other policy.
    pub async fn all_rules(&self) -> Result<Vec<RateLimitRule>> {
        let rows: Vec<RateLimitPolicyRow> = self
            .db
            .run(|conn| {
                Ok(rate_limit_policies::table
                    .select(RateLimitPolicyRow::as_select())
                    .order((
                        rate_limit_policies::org_id.asc(),
                        rate_limit_policies::policy_id.asc(),
                    ))
                    .load(conn)?)
            })
            .await?;
        let mut rules: Vec<RateLimitRule> = rows
            .iter()
            .filter_map(|row| match row.to_rule() {
                Ok(rule) => Some(rule),
                Err(error) => {
                    tracing::warn!(policy = %row.name(), %error, "unreadable rate-limit policy skipped");
                    None
                }
            })
            .collect();
        rules.sort_by(|a, b| a.org.cmp(&b.org).then_with(|| a.precedence(b)));
        Ok(rules)
    }

    /// `(number of policies, greatest update_time in µs)` over every
    /// organization: one indexed query, changed by every write on any
    /// replica (see the module documentation). Poll it and reload
    /// [`Store::all_rules`] when it differs.
    pub async fn fingerprint(&self) -> Result<(i64, Option<i64>)> {
        self.db
            .run(|conn| {
                Ok(rate_limit_policies::table
                    .select((count_star(), max(rate_limit_policies::update_time)))
                    .first(conn)?)
            })
            .await
    }
}

/// Inserts a policy and its event.
fn insert(tx: &mut Tx<'_>, new: NewRateLimitPolicy) -> Result<RateLimitPolicyRow> {
    let now = now_micros();
    let update_time = next_update_time(tx.conn, now)?;
    let NewRateLimitPolicy { name, spec } = new;
    let s = &spec.selector;
    let row = RateLimitPolicyRow {
        org_id: name.org.clone(),
        policy_id: name.policy.clone(),
        uid: generate_id(),
        display_name: spec.display_name.clone(),
        method: s.method.clone(),
        principal: s.principal.clone(),
        api_key: s.api_key.clone(),
        oauth_client: s.oauth_client.clone(),
        headers: to_json(&s.headers),
        descriptors: to_json(&s.descriptors),
        rate_limit: spec.rate.map(|r| r.limit),
        rate_period: spec.rate.map(|r| r.period.code()),
        rate_burst: spec.rate.and_then(|r| r.burst),
        quota_limit: spec.quota.map(|q| q.limit),
        quota_period: spec.quota.map(|q| q.period.code()),
        algorithm: spec.algorithm.code(),
        shadow: i16::from(spec.shadow),
        failure_mode: spec.failure_mode.code(),
        key_by: spec.key_by.code(),
        create_time: now,
        update_time,
        revision: 1,
    };
    let resource = name.to_string();
    inserted(
        diesel::insert_into(rate_limit_policies::table)
            .values(&row)
            .execute(tx.conn),
        || resource.clone(),
    )?;
    tx.emit(
        EventKind::RateLimitPolicyCreated,
        &row.org_id,
        resource,
        row.after(),
    )?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> RateLimitPolicyRow {
        RateLimitPolicyRow {
            org_id: "acme".into(),
            policy_id: "p".into(),
            uid: "u".into(),
            display_name: "P".into(),
            method: Some("/tollgate.v1.*".into()),
            principal: None,
            api_key: None,
            oauth_client: None,
            headers: r#"{"x-tenant":""}"#.into(),
            descriptors: "{}".into(),
            rate_limit: Some(10),
            rate_period: Some(RatePeriod::Minute.code()),
            rate_burst: None,
            quota_limit: None,
            quota_period: None,
            algorithm: RateAlgorithm::Gcra.code(),
            shadow: 1,
            failure_mode: FailureMode::Closed.code(),
            key_by: KeyBy::Descriptor.code(),
            create_time: 1,
            update_time: 2,
            revision: 1,
        }
    }

    #[test]
    fn rows_read_back_and_compile() {
        let r = row();
        let spec = r.spec().unwrap();
        assert!(spec.shadow);
        assert_eq!(spec.selector.headers.len(), 1);
        let rule = r.to_rule().unwrap();
        assert_eq!(&*rule.name, "organizations/acme/rateLimitPolicies/p");
        assert_eq!(rule.limit.map(|l| (l.limit, l.burst)), Some((10, 10)));
        assert!(rule.fail_closed && rule.shadow);
        let p = r.to_proto();
        assert_eq!(p.selector.unwrap().headers["x-tenant"], "");
        assert_eq!(p.limit.unwrap().burst, None);
        assert!(p.quota.is_none());

        let bad = RateLimitPolicyRow { key_by: 9, ..row() };
        assert!(bad.to_rule().is_err());
        let bad = RateLimitPolicyRow {
            headers: "[".into(),
            ..row()
        };
        assert!(bad.spec().is_err());
        let bad = RateLimitPolicyRow {
            rate_period: None,
            ..row()
        };
        assert!(bad.spec().is_err());
        let bad = RateLimitPolicyRow {
            method: Some("no slash".into()),
            ..row()
        };
        assert!(bad.to_rule().is_err(), "never a catch-all by accident");
    }

    #[test]
    fn changes_replace_whole_fields() {
        let ch = RateLimitPolicyChanges {
            rate: Some(None),
            selector: Some(Selector::default()),
            ..Default::default()
        };
        let c = Changeset::from(&ch);
        assert_eq!(c.rate_limit, Some(None));
        assert_eq!(c.rate_burst, Some(None));
        assert_eq!(c.method, Some(None));
        assert_eq!(c.headers.as_deref(), Some("{}"));
        assert_eq!(c.quota_limit, None, "untouched");
        // Removing the rate of a policy without a quota leaves nothing.
        let Err(Error::InvalidArgument(v)) = check_merged(&row(), &ch) else {
            panic!("a policy needs a limit or a quota");
        };
        let fields: Vec<_> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["rate_limit_policy.limit", "rate_limit_policy.key_by"]
        );
    }
}
