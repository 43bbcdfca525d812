//! The webhooks repository, and the deliveries that feed them.
//!
//! # Deliveries
//!
//! The relay makes an event's deliveries ([`fan_out`]) in the transaction
//! that marks the event relayed, so each (webhook, event) pair exists once
//! however often the relay restarts. Each webhook with pending deliveries
//! has one job, its *pump* (kind [`PUMP`], unique key per webhook), which
//! sends them one at a time in event order: that is what orders them.
//!
//! A pump that finds nothing left to send waits a moment for the next
//! delivery (the relay wakes it), then gives up its unique key
//! ([`Store::finish_webhook_pump`]) under a lock on the webhook's row,
//! the same lock the fan-out takes before adding deliveries: so a delivery
//! added while a pump finishes either is seen by the pump or finds the key
//! free and enqueues a new pump. None waits for a pump that will not come.

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper};
use tollgate::tollgate::v1::{
    Delivery, Webhook, delivery::Status as DeliveryStatus, webhook::State,
};

use super::{
    DbConnection, Store,
    filter::{apply_op, int, small, text, unknown},
    jobs::{NewJob, enqueue_many_on, enqueue_on},
    organizations,
    schema::{jobs, webhook_deliveries, webhooks},
    versioned::{Lock, Versioned, current, delete_versioned, inserted, lock_row, update_versioned},
};
use crate::{
    domain::{
        Error, Result, etag,
        filter::{FieldType, Predicate},
        names::{DeliveryName, WebhookName},
        now_micros,
        page::PageRequest,
        timestamp,
    },
    events::{After, Event, EventKind, WriteContext},
};

/// The job kind of a webhook's pump.
pub const PUMP: &str = "webhook.deliver";

/// Waiting to be sent.
pub const PENDING: i16 = DeliveryStatus::Pending as i16;
/// The endpoint answered 2xx.
pub const SUCCEEDED: i16 = DeliveryStatus::Succeeded as i16;
/// Given up.
pub const DEAD: i16 = DeliveryStatus::Dead as i16;

const ACTIVE: i16 = State::Active as i16;

/// The fields ListWebhooks filters on.
pub const FILTERS: &[(&str, FieldType)] = &[
    (
        "state",
        FieldType::Enum {
            values: &[State::Active as i32, State::Disabled as i32],
            name: |v| State::try_from(v).ok().map(|s| s.as_str_name()),
        },
    ),
    ("display_name", FieldType::Text),
    ("create_time", FieldType::Timestamp),
];

/// The fields ListDeliveries filters on.
pub const DELIVERY_FILTERS: &[(&str, FieldType)] = &[
    (
        "status",
        FieldType::Enum {
            values: &[
                DeliveryStatus::Pending as i32,
                DeliveryStatus::Succeeded as i32,
                DeliveryStatus::Dead as i32,
            ],
            name: |v| DeliveryStatus::try_from(v).ok().map(|s| s.as_str_name()),
        },
    ),
    ("event_type", FieldType::Text),
];

/// A stored webhook: its secrets sealed, never in the clear.
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = webhooks)]
pub struct WebhookRow {
    /// The organization.
    pub org_id: String,
    /// The id in `…/webhooks/{webhook_id}`.
    pub webhook_id: String,
    /// Unique forever; the associated data of its sealed secrets.
    pub uid: String,
    /// Shown in lists.
    pub display_name: String,
    /// Free text.
    pub description: String,
    /// Checked at write; its addresses are checked at every delivery.
    pub url: String,
    /// Space-separated filter; empty for every event.
    pub event_types: String,
    /// `Webhook.State` as stored.
    pub state: i16,
    /// The current secret (`whsec_…`), sealed with the KEK.
    pub secret_sealed: String,
    /// The secret before the last rotation, sealed.
    pub previous_secret_sealed: Option<String>,
    /// Until when the previous secret also signs (microseconds).
    pub previous_secret_expire_time: Option<i64>,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
    /// Bumped by every change.
    pub revision: i64,
}

impl WebhookRow {
    /// Its resource name.
    pub fn name(&self) -> WebhookName {
        WebhookName {
            org: self.org_id.clone(),
            webhook: self.webhook_id.clone(),
        }
    }

    /// Whether it gets deliveries.
    pub fn is_active(&self) -> bool {
        self.state == ACTIVE
    }

    /// The previous secret, sealed, while it still signs.
    pub fn previous_secret(&self, now: i64) -> Option<&str> {
        self.previous_secret_sealed
            .as_deref()
            .filter(|_| self.previous_secret_expire_time.is_some_and(|t| t > now))
    }

    /// The webhook as the API shows it: never a secret.
    pub fn to_proto(&self) -> Webhook {
        Webhook {
            name: self.name().to_string(),
            uid: self.uid.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            url: self.url.clone(),
            event_types: self
                .event_types
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            state: i32::from(self.state),
            secret: String::new(),
            previous_secret_expire_time: self
                .previous_secret_sealed
                .as_ref()
                .and(self.previous_secret_expire_time)
                .map(timestamp),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            etag: Versioned::etag(self),
        }
    }
}

/// The associated data a webhook's secrets are sealed with: its uid, so a
/// sealed secret copied to another webhook does not open.
pub fn seal_context(uid: &str) -> String {
    format!("webhook:{uid}")
}

impl Versioned for WebhookRow {
    type Name = WebhookName;

    fn load(conn: &mut DbConnection, name: &WebhookName, lock: Lock) -> Result<Option<Self>> {
        if lock != Lock::None
            && !lock_row(
                conn,
                "webhooks",
                &[("org_id", &name.org), ("webhook_id", &name.webhook)],
                lock,
            )?
        {
            return Ok(None);
        }
        Ok(webhooks::table
            .find((&name.org, &name.webhook))
            .select(WebhookRow::as_select())
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
        After::Webhook(self.to_proto())
    }
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct DeliveryRow {
    /// The organization.
    pub org_id: String,
    /// The webhook's id.
    pub webhook_id: String,
    /// The event's id; also the delivery's.
    pub event_id: i64,
    /// The event's type.
    pub event_type: String,
    /// [`PENDING`], [`SUCCEEDED`] or [`DEAD`].
    pub status: i16,
    /// Attempts since it was made or last retried by hand.
    pub attempts: i32,
    /// The last response's status; 0 for none.
    pub last_response_code: i32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// The last attempt's duration.
    pub last_latency_micros: i64,
    /// The JSON body, the same on every attempt.
    pub body: String,
    /// When it was made.
    pub create_time: i64,
    /// When it was last attempted.
    pub last_attempt_time: Option<i64>,
    /// When it is next due.
    pub next_attempt_time: i64,
    /// The W3C `traceparent` of the change the event records; empty when
    /// traces were off.
    pub trace_parent: String,
}

impl DeliveryRow {
    /// Its resource name.
    pub fn name(&self) -> DeliveryName {
        DeliveryName {
            webhook: WebhookName {
                org: self.org_id.clone(),
                webhook: self.webhook_id.clone(),
            },
            event_id: self.event_id,
        }
    }

    /// The delivery as the API shows it (never its body).
    pub fn to_proto(&self) -> Delivery {
        Delivery {
            name: self.name().to_string(),
            event_id: u64::try_from(self.event_id).unwrap_or_default(),
            event_type: self.event_type.clone(),
            status: i32::from(self.status),
            attempts: self.attempts,
            last_response_code: self.last_response_code,
            last_error: self.last_error.clone(),
            last_latency: (self.last_attempt_time.is_some()).then(|| prost_types::Duration {
                seconds: self.last_latency_micros / 1_000_000,
                nanos: i32::try_from((self.last_latency_micros % 1_000_000) * 1000)
                    .unwrap_or_default(),
            }),
            create_time: Some(timestamp(self.create_time)),
            last_attempt_time: self.last_attempt_time.map(timestamp),
            next_attempt_time: (self.status == PENDING).then(|| timestamp(self.next_attempt_time)),
        }
    }
}

/// A webhook to create: the API made its uid and sealed its secret.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// Its name.
    pub name: WebhookName,
    /// Its uid, which its sealed secret is bound to.
    pub uid: String,
    /// Shown in lists.
    pub display_name: String,
    /// Free text.
    pub description: String,
    /// A checked URL.
    pub url: String,
    /// A checked filter.
    pub event_types: Vec<String>,
    /// `Webhook.State`.
    pub state: i16,
    /// The secret, sealed.
    pub secret_sealed: String,
}

/// The mutable fields of a webhook; `None` leaves a field unchanged.
#[derive(Debug, Default, Clone, diesel::AsChangeset)]
#[diesel(table_name = webhooks)]
pub struct WebhookChanges {
    /// A new display name.
    pub display_name: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// A checked URL.
    pub url: Option<String>,
    /// A checked, space-separated filter.
    pub event_types: Option<String>,
    /// A new `Webhook.State`.
    pub state: Option<i16>,
}

/// What one attempt of a delivery came to, to record.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The delivery's event.
    pub event_id: i64,
    /// [`PENDING`] (to retry at `next_attempt_time`), [`SUCCEEDED`] or
    /// [`DEAD`].
    pub status: i16,
    /// The response's status; 0 for none.
    pub response_code: i32,
    /// Why it failed; empty when it did not.
    pub error: String,
    /// How long it took.
    pub latency_micros: i64,
    /// When it was made.
    pub time: i64,
    /// When a retry is due.
    pub next_attempt_time: i64,
}

/// A pump's next work: the webhook, if it still exists, and its first
/// pending deliveries in event order.
#[derive(Debug)]
pub struct PumpBatch {
    /// The webhook; `None` once deleted.
    pub webhook: Option<WebhookRow>,
    /// At most the limit asked for.
    pub deliveries: Vec<DeliveryRow>,
}

/// The job payload and unique key of `hook`'s pump.
fn pump_job(hook: &WebhookName) -> NewJob {
    let key = format!("{PUMP}:{}/{}", hook.org, hook.webhook);
    let payload = serde_json::json!({"org": hook.org, "webhook": hook.webhook}).to_string();
    // The pump's own attempts are not the deliveries' (those are counted
    // per delivery); it waits for a delivery's retry by failing with
    // that delay, as often as it takes.
    NewJob::new(PUMP, payload)
        .unique(key)
        .max_attempts(i32::MAX)
}

/// The webhook a pump's payload names.
pub fn pump_target(payload: &str) -> Result<WebhookName> {
    #[derive(serde::Deserialize)]
    struct Payload {
        org: String,
        webhook: String,
    }
    let p: Payload = serde_json::from_str(payload)
        .map_err(|e| Error::Internal(format!("webhook pump payload: {e}")))?;
    Ok(WebhookName {
        org: p.org,
        webhook: p.webhook,
    })
}

/// Makes the deliveries of `events` (relayed in this transaction) to the
/// active webhooks of their organizations whose filters match, and
/// enqueues the pumps of the webhooks that got one. Returns how many
/// deliveries were made. `body` renders an event's delivery body.
pub(crate) fn fan_out(
    conn: &mut DbConnection,
    events: &[&Event],
    body: &dyn Fn(&Event) -> Option<String>,
) -> Result<usize> {
    let mut orgs: Vec<&str> = events
        .iter()
        .filter_map(|e| e.organization.strip_prefix("organizations/"))
        .collect();
    orgs.sort_unstable();
    orgs.dedup();
    if orgs.is_empty() {
        return Ok(0);
    }
    let hooks: Vec<(String, String, String)> = match conn {
        // FOR SHARE: see the module doc (a finishing pump takes FOR UPDATE).
        DbConnection::Postgres(pg) => webhooks::table
            .filter(webhooks::org_id.eq_any(&orgs))
            .filter(webhooks::state.eq(ACTIVE))
            .select((
                webhooks::org_id,
                webhooks::webhook_id,
                webhooks::event_types,
            ))
            .for_share()
            .load(pg)?,
        DbConnection::Sqlite(lite) => webhooks::table
            .filter(webhooks::org_id.eq_any(&orgs))
            .filter(webhooks::state.eq(ACTIVE))
            .select((
                webhooks::org_id,
                webhooks::webhook_id,
                webhooks::event_types,
            ))
            .load(lite)?,
    };
    if hooks.is_empty() {
        return Ok(0);
    }
    let now = now_micros();
    let mut rows: Vec<NewDelivery> = Vec::new();
    let mut fed: Vec<WebhookName> = Vec::new();
    for event in events {
        let Some(org) = event.organization.strip_prefix("organizations/") else {
            continue;
        };
        let mut rendered: Option<Option<String>> = None;
        for (hook_org, hook_id, filter) in &hooks {
            if hook_org != org || !crate::domain::webhook::matches(filter, &event.r#type) {
                continue;
            }
            let Some(body) = rendered.get_or_insert_with(|| body(event)).clone() else {
                continue;
            };
            rows.push(NewDelivery {
                org_id: hook_org.clone(),
                webhook_id: hook_id.clone(),
                event_id: i64::try_from(event.id).unwrap_or(i64::MAX),
                event_type: event.r#type.clone(),
                status: PENDING,
                attempts: 0,
                last_response_code: 0,
                last_error: String::new(),
                last_latency_micros: 0,
                body,
                create_time: now,
                next_attempt_time: now,
                trace_parent: event.trace_parent.clone(),
            });
            let name = WebhookName {
                org: hook_org.clone(),
                webhook: hook_id.clone(),
            };
            if !fed.contains(&name) {
                fed.push(name);
            }
        }
    }
    // Multi-row statements: a round trip per row would make the relay's
    // transaction grow with the number of webhooks.
    let mut made = 0;
    for chunk in rows.chunks(200) {
        made += match conn {
            DbConnection::Postgres(pg) => diesel::insert_into(webhook_deliveries::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .execute(pg)?,
            // Row by row: diesel has no batch insert with ON CONFLICT for
            // SQLite, and an in-process database has no round trips.
            DbConnection::Sqlite(lite) => {
                let mut n = 0;
                for row in chunk {
                    n += diesel::insert_into(webhook_deliveries::table)
                        .values(row)
                        .on_conflict_do_nothing()
                        .execute(lite)?;
                }
                n
            }
        };
    }
    let pumps: Vec<NewJob> = fed.iter().map(pump_job).collect();
    enqueue_many_on(conn, &pumps)?;
    Ok(made)
}

/// A delivery as the fan-out inserts it.
#[derive(diesel::Insertable)]
#[diesel(table_name = webhook_deliveries)]
struct NewDelivery {
    org_id: String,
    webhook_id: String,
    event_id: i64,
    event_type: String,
    status: i16,
    attempts: i32,
    last_response_code: i32,
    last_error: String,
    last_latency_micros: i64,
    body: String,
    create_time: i64,
    next_attempt_time: i64,
    trace_parent: String,
}

impl Store {
    /// Creates a webhook in an existing organization.
    pub async fn create_webhook(&self, ctx: &WriteContext, new: NewWebhook) -> Result<WebhookRow> {
        self.write(ctx, move |tx| {
            organizations::require(tx.conn, &new.name.org)?;
            let now = now_micros();
            let row = WebhookRow {
                org_id: new.name.org,
                webhook_id: new.name.webhook,
                uid: new.uid,
                display_name: new.display_name,
                description: new.description,
                url: new.url,
                event_types: new.event_types.join(" "),
                state: new.state,
                secret_sealed: new.secret_sealed,
                previous_secret_sealed: None,
                previous_secret_expire_time: None,
                create_time: now,
                update_time: now,
                revision: 1,
            };
            let name = row.name().to_string();
            inserted(
                diesel::insert_into(webhooks::table)
                    .values(&row)
                    .execute(tx.conn),
                || name.clone(),
            )?;
            tx.emit(EventKind::WebhookCreated, &row.org_id, name, row.after())?;
            Ok(row)
        })
        .await
    }

    /// Reads a webhook.
    pub async fn get_webhook(&self, name: &WebhookName) -> Result<WebhookRow> {
        let n = name.clone();
        self.db
            .run(move |conn| WebhookRow::load(conn, &n, Lock::None))
            .await?
            .ok_or_else(|| Error::not_found(name.to_string()))
    }

    /// One page of an organization's webhooks in id order.
    pub async fn list_webhooks(
        &self,
        org: String,
        filter: Vec<Predicate>,
        page: PageRequest,
    ) -> Result<(Vec<WebhookRow>, String)> {
        let limit = page.fetch_limit();
        let after = page.after.clone();
        let mut rows = self
            .db
            .run(move |conn| {
                let mut q = webhooks::table
                    .select(WebhookRow::as_select())
                    .filter(webhooks::org_id.eq(org))
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(webhooks::webhook_id.gt(after));
                }
                for p in &filter {
                    q = match p.field {
                        "state" => apply_op!(q, webhooks::state, p.op, small(p)?),
                        "display_name" => apply_op!(q, webhooks::display_name, p.op, text(p)?),
                        "create_time" => apply_op!(q, webhooks::create_time, p.op, int(p)?),
                        _ => return Err(unknown(p)),
                    };
                }
                Ok(q.order(webhooks::webhook_id.asc())
                    .limit(limit)
                    .load(conn)?)
            })
            .await?;
        let next = page.finish(&mut rows, |r| r.webhook_id.clone());
        Ok((rows, next))
    }

    /// Updates a webhook. Made active again, its waiting deliveries are
    /// sent.
    pub async fn update_webhook(
        &self,
        ctx: &WriteContext,
        name: WebhookName,
        sent_etag: String,
        changes: WebhookChanges,
    ) -> Result<WebhookRow> {
        let resumes = changes.state == Some(ACTIVE);
        let row = self
            .write(ctx, move |tx| {
                let row = update_versioned(
                    tx,
                    &name,
                    &sent_etag,
                    &|_| Ok(()),
                    |conn, cur: &WebhookRow| {
                        Ok(diesel::update(
                            webhooks::table
                                .find((&cur.org_id, &cur.webhook_id))
                                .filter(webhooks::revision.eq(cur.revision)),
                        )
                        .set((
                            &changes,
                            webhooks::update_time.eq(now_micros()),
                            webhooks::revision.eq(cur.revision + 1),
                        ))
                        .execute(conn)?)
                    },
                    EventKind::WebhookUpdated,
                )?;
                if resumes {
                    enqueue_on(tx.conn, &pump_job(&name))?;
                }
                Ok(row)
            })
            .await?;
        if resumes {
            self.jobs_enqueued().notify_waiters();
        }
        Ok(row)
    }

    /// Deletes a webhook with its deliveries.
    pub async fn delete_webhook(
        &self,
        ctx: &WriteContext,
        name: WebhookName,
        sent_etag: String,
    ) -> Result<()> {
        self.write(ctx, move |tx| {
            delete_versioned(
                tx,
                &name,
                &sent_etag,
                &|_| Ok(()),
                |conn, cur: &WebhookRow| {
                    diesel::delete(
                        webhook_deliveries::table
                            .filter(webhook_deliveries::org_id.eq(&cur.org_id))
                            .filter(webhook_deliveries::webhook_id.eq(&cur.webhook_id)),
                    )
                    .execute(conn)?;
                    diesel::delete(webhooks::table.find((&cur.org_id, &cur.webhook_id)))
                        .execute(conn)?;
                    Ok(())
                },
                EventKind::WebhookDeleted,
            )
            .map(drop)
        })
        .await
    }

    /// Gives a webhook the new sealed secret `sealed`; the current one also
    /// signs for `grace_micros` (0: not at all).
    pub async fn rotate_webhook_secret(
        &self,
        ctx: &WriteContext,
        name: WebhookName,
        sent_etag: String,
        grace_micros: i64,
        seal: impl FnOnce(&WebhookRow) -> Result<String> + Send + 'static,
    ) -> Result<WebhookRow> {
        self.write(ctx, move |tx| {
            let resource = name.to_string();
            let cur: WebhookRow = current(tx, &name, &resource, &sent_etag, &|_| Ok(()))?;
            let sealed = seal(&cur)?;
            let now = now_micros();
            let (previous, previous_expire) = if grace_micros > 0 {
                (
                    Some(cur.secret_sealed.clone()),
                    Some(now.saturating_add(grace_micros)),
                )
            } else {
                (None, None)
            };
            let n = diesel::update(
                webhooks::table
                    .find((&cur.org_id, &cur.webhook_id))
                    .filter(webhooks::revision.eq(cur.revision)),
            )
            .set((
                webhooks::secret_sealed.eq(sealed),
                webhooks::previous_secret_sealed.eq(previous),
                webhooks::previous_secret_expire_time.eq(previous_expire),
                webhooks::update_time.eq(now),
                webhooks::revision.eq(cur.revision + 1),
            ))
            .execute(tx.conn)?;
            if n == 0 {
                return Err(Error::Aborted { resource });
            }
            let row = WebhookRow::load(tx.conn, &name, Lock::None)?
                .ok_or_else(|| Error::not_found(&resource))?;
            tx.emit_change(
                EventKind::WebhookSecretRotated,
                &row.org_id,
                resource,
                &cur.after(),
                row.after(),
            )?;
            Ok(row)
        })
        .await
    }

    /// One page of a webhook's deliveries, newest event first. NOT_FOUND
    /// when the webhook does not exist.
    pub async fn list_deliveries(
        &self,
        hook: WebhookName,
        filter: Vec<Predicate>,
        page: PageRequest,
    ) -> Result<(Vec<DeliveryRow>, String)> {
        let limit = page.fetch_limit();
        let after =
            match &page.after {
                Some(a) => Some(a.parse::<i64>().map_err(|_| {
                    Error::invalid("page_token", "is not a page token of this list")
                })?),
                None => None,
            };
        let mut rows = self
            .db
            .run(move |conn| {
                if WebhookRow::load(conn, &hook, Lock::None)?.is_none() {
                    return Err(Error::not_found(hook.to_string()));
                }
                let mut q = webhook_deliveries::table
                    .select(DeliveryRow::as_select())
                    .filter(webhook_deliveries::org_id.eq(&hook.org))
                    .filter(webhook_deliveries::webhook_id.eq(&hook.webhook))
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(webhook_deliveries::event_id.lt(after));
                }
                for p in &filter {
                    q = match p.field {
                        "status" => apply_op!(q, webhook_deliveries::status, p.op, small(p)?),
                        "event_type" => {
                            apply_op!(q, webhook_deliveries::event_type, p.op, text(p)?)
                        }
                        _ => return Err(unknown(p)),
                    };
                }
                Ok(q.order(webhook_deliveries::event_id.desc())
                    .limit(limit)
                    .load(conn)?)
            })
            .await?;
        let next = page.finish(&mut rows, |r| r.event_id.to_string());
        Ok((rows, next))
    }

    /// Makes a finished delivery pending again, its attempts reset, and
    /// wakes its webhook's pump. A pending one is FAILED_PRECONDITION.
    pub async fn retry_delivery(&self, name: DeliveryName) -> Result<DeliveryRow> {
        let row = self
            .db
            .write(move |conn| {
                let resource = name.to_string();
                let key = (&name.webhook.org, &name.webhook.webhook, name.event_id);
                let cur: DeliveryRow = webhook_deliveries::table
                    .find(key)
                    .select(DeliveryRow::as_select())
                    .first(conn)
                    .optional()?
                    .ok_or_else(|| Error::not_found(&resource))?;
                if cur.status == PENDING {
                    return Err(Error::FailedPrecondition {
                        reason: "DELIVERY_PENDING",
                        message: format!("{resource} is still pending; it will be sent"),
                    });
                }
                diesel::update(webhook_deliveries::table.find(key))
                    .set((
                        webhook_deliveries::status.eq(PENDING),
                        webhook_deliveries::attempts.eq(0),
                        webhook_deliveries::next_attempt_time.eq(now_micros()),
                    ))
                    .execute(conn)?;
                enqueue_on(conn, &pump_job(&name.webhook))?;
                Ok(webhook_deliveries::table
                    .find(key)
                    .select(DeliveryRow::as_select())
                    .first(conn)?)
            })
            .await?;
        self.jobs_enqueued().notify_waiters();
        Ok(row)
    }

    /// A pump's next batch: `hook` and its first `limit` pending
    /// deliveries in event order.
    pub async fn pump_batch(&self, hook: &WebhookName, limit: i64) -> Result<PumpBatch> {
        let hook = hook.clone();
        self.db
            .run(move |conn| {
                let webhook = WebhookRow::load(conn, &hook, Lock::None)?;
                let deliveries = match &webhook {
                    Some(w) if w.is_active() => webhook_deliveries::table
                        .filter(webhook_deliveries::org_id.eq(&hook.org))
                        .filter(webhook_deliveries::webhook_id.eq(&hook.webhook))
                        .filter(webhook_deliveries::status.eq(PENDING))
                        .order(webhook_deliveries::event_id.asc())
                        .limit(limit)
                        .select(DeliveryRow::as_select())
                        .load(conn)?,
                    _ => Vec::new(),
                };
                Ok(PumpBatch {
                    webhook,
                    deliveries,
                })
            })
            .await
    }

    /// Records the attempts of one pump round, in one transaction. An
    /// attempt of a delivery that is no longer pending (retried or deleted
    /// meanwhile) changes nothing.
    pub async fn record_attempts(&self, hook: &WebhookName, attempts: Vec<Attempt>) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let hook = hook.clone();
        self.db
            .write(move |conn| record(conn, &hook, &attempts))
            .await
    }

    /// Ends pump job `job_id` of `hook` if nothing is left for it (no
    /// pending delivery, or the webhook inactive or gone): gives up its
    /// unique key, so the next delivery enqueues a new pump. `false` when a
    /// delivery arrived meanwhile; the pump goes on.
    pub async fn finish_webhook_pump(&self, hook: &WebhookName, job_id: i64) -> Result<bool> {
        let hook = hook.clone();
        self.db
            .write(move |conn| {
                lock_row(
                    conn,
                    "webhooks",
                    &[("org_id", &hook.org), ("webhook_id", &hook.webhook)],
                    Lock::Update,
                )?;
                finish_if_idle(conn, &hook, job_id)
            })
            .await
    }

    /// Deletes at most `batch` finished deliveries made before `cutoff`
    /// (microseconds); returns how many.
    pub async fn purge_deliveries(&self, cutoff: i64, batch: i64) -> Result<u64> {
        self.db
            .write(move |conn| {
                let old: Vec<(String, String, i64)> = webhook_deliveries::table
                    .filter(webhook_deliveries::status.ne(PENDING))
                    .filter(webhook_deliveries::create_time.lt(cutoff))
                    .select((
                        webhook_deliveries::org_id,
                        webhook_deliveries::webhook_id,
                        webhook_deliveries::event_id,
                    ))
                    .limit(batch)
                    .load(conn)?;
                let mut n = 0u64;
                for (org, hook, event) in &old {
                    n += diesel::delete(webhook_deliveries::table.find((org, hook, event)))
                        .execute(conn)? as u64;
                }
                Ok(n)
            })
            .await
    }
}

/// Applies a pump round's `attempts`.
fn record(conn: &mut DbConnection, hook: &WebhookName, attempts: &[Attempt]) -> Result<()> {
    for a in attempts {
        // Bounded: an error may quote a whole response.
        let error: String = a.error.chars().take(500).collect();
        diesel::update(
            webhook_deliveries::table
                .find((&hook.org, &hook.webhook, a.event_id))
                .filter(webhook_deliveries::status.eq(PENDING)),
        )
        .set((
            webhook_deliveries::status.eq(a.status),
            webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
            webhook_deliveries::last_response_code.eq(a.response_code),
            webhook_deliveries::last_error.eq(error),
            webhook_deliveries::last_latency_micros.eq(a.latency_micros),
            webhook_deliveries::last_attempt_time.eq(Some(a.time)),
            webhook_deliveries::next_attempt_time.eq(a.next_attempt_time),
        ))
        .execute(conn)?;
    }
    Ok(())
}

/// With the webhook's row locked by the caller: clears pump `job_id`'s
/// unique key when the webhook has nothing pending (or is inactive or
/// gone); returns whether it did.
fn finish_if_idle(conn: &mut DbConnection, hook: &WebhookName, job_id: i64) -> Result<bool> {
    let webhook = WebhookRow::load(conn, hook, Lock::None)?;
    if webhook.is_some_and(|w| w.is_active()) {
        let pending: i64 = webhook_deliveries::table
            .filter(webhook_deliveries::org_id.eq(&hook.org))
            .filter(webhook_deliveries::webhook_id.eq(&hook.webhook))
            .filter(webhook_deliveries::status.eq(PENDING))
            .count()
            .get_result(conn)?;
        if pending > 0 {
            return Ok(false);
        }
    }
    diesel::update(jobs::table.filter(jobs::id.eq(job_id)))
        .set(jobs::unique_key.eq(None::<String>))
        .execute(conn)?;
    Ok(true)
}

/// Deletes every webhook of `org` and their deliveries (the organization
/// is being deleted, in this transaction).
pub(crate) fn delete_of_org(conn: &mut DbConnection, org: &str) -> Result<()> {
    diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::org_id.eq(org)))
        .execute(conn)?;
    diesel::delete(webhooks::table.filter(webhooks::org_id.eq(org))).execute(conn)?;
    Ok(())
}
