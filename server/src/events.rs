//! Events: the typed record every write leaves behind. A store write takes
//! a [`WriteContext`] (who writes, under which request) and appends one
//! `tollgate.v1.Event` per changed resource to the outbox, in the same
//! transaction as the change (`store::Tx::emit`). After commit the store
//! hands the events to `Caches::apply`; the relay (later) will publish the
//! same rows and every replica's bus subscriber will call the same apply.
//!
//! # Order
//!
//! On PostgreSQL an outbox id (`BIGSERIAL`) is taken at insert, not at
//! commit, so ids alone do not say in which order transactions committed.
//! Tollgate makes them agree within an organization: the append first takes
//! a transaction-scoped advisory lock on the organization
//! (`pg_advisory_xact_lock`), held until commit, so two writers of one
//! organization append and commit one after the other, and a later id of
//! an organization is never visible before an earlier one. Across
//! organizations there is no order to keep. The relay therefore reads
//! unrelayed rows (`outbox_pending`) in id order. On
//! SQLite every write transaction holds the database's single write lock
//! (`BEGIN IMMEDIATE`), so ids are in commit order everywhere.

use std::{fmt, sync::Arc};

use prost::Message as _;
use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};

pub use tollgate::tollgate::v1::{Event, event::After};

/// Fields every change touches, never listed in `Event.changed_fields`.
const BOOKKEEPING: [&str; 2] = ["update_time", "etag"];

/// The top-level fields of the resource that differ between `before` and
/// `after`, in field-number order, without [`BOOKKEEPING`]: the
/// `Event.changed_fields` of a change. Read through reflection so a field
/// added to a resource is covered without touching this.
pub fn changed_fields(before: &After, after: &After) -> Vec<String> {
    let (Some(before), Some(after)) = (resource(before), resource(after)) else {
        return Vec::new();
    };
    if before.descriptor() != after.descriptor() {
        return Vec::new();
    }
    after
        .descriptor()
        .fields()
        .filter(|f| !BOOKKEEPING.contains(&f.name()))
        .filter(|f| before.get_field(f) != after.get_field(f))
        .map(|f| f.name().to_owned())
        .collect()
}

/// The resource message inside `after`, as a dynamic message.
fn resource(after: &After) -> Option<DynamicMessage> {
    let event = Event {
        after: Some(after.clone()),
        ..Event::default()
    };
    let dynamic = DynamicMessage::decode(
        crate::http::descriptors().get_message_by_name("tollgate.v1.Event")?,
        event.encode_to_vec().as_slice(),
    )
    .ok()?;
    let field = dynamic
        .descriptor()
        .fields()
        .find(|f| dynamic.has_field(f))?;
    match dynamic.get_field(&field).into_owned() {
        Value::Message(m) => Some(m),
        _ => None,
    }
}

/// The actor of changes made by the server itself or by an operator's
/// offline command (bootstrap, `admin create-key`, `admin recover`).
pub const SYSTEM_ACTOR: &str = "system";

/// What happened to a resource; stored and published as its
/// [`EventKind::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An organization was created.
    OrganizationCreated,
    /// An organization's fields or state changed.
    OrganizationUpdated,
    /// An organization was deleted, with everything in it.
    OrganizationDeleted,
    /// A user was created.
    UserCreated,
    /// A user's fields, state or roles changed.
    UserUpdated,
    /// A user's password was set.
    UserPasswordSet,
    /// A user was deleted, with its keys.
    UserDeleted,
    /// A service account was created.
    ServiceAccountCreated,
    /// A service account's fields, state or roles changed.
    ServiceAccountUpdated,
    /// A service account was deleted, with its keys.
    ServiceAccountDeleted,
    /// An API key was minted.
    ApiKeyCreated,
    /// An API key was revoked.
    ApiKeyRevoked,
    /// A signing key was created (first start or rotation).
    SigningKeyCreated,
    /// A newer signing key takes over from this one: its deactivate and
    /// retire times were set.
    SigningKeyReplaced,
    /// An OAuth client was created.
    OAuthClientCreated,
    /// An OAuth client's settings or state changed.
    OAuthClientUpdated,
    /// An OAuth client was deleted, with its codes and refresh tokens.
    OAuthClientDeleted,
    /// An OAuth client got a new secret.
    OAuthClientSecretRotated,
    /// A rate-limit policy was created.
    RateLimitPolicyCreated,
    /// A rate-limit policy's settings changed.
    RateLimitPolicyUpdated,
    /// A rate-limit policy was deleted.
    RateLimitPolicyDeleted,
    /// An OAuth access token, or a refresh token family, was revoked.
    TokenRevoked,
    /// A webhook was created.
    WebhookCreated,
    /// A webhook's settings changed.
    WebhookUpdated,
    /// A webhook got a new secret.
    WebhookSecretRotated,
    /// A webhook was deleted.
    WebhookDeleted,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 26] = [
        EventKind::OrganizationCreated,
        EventKind::OrganizationUpdated,
        EventKind::OrganizationDeleted,
        EventKind::UserCreated,
        EventKind::UserUpdated,
        EventKind::UserPasswordSet,
        EventKind::UserDeleted,
        EventKind::ServiceAccountCreated,
        EventKind::ServiceAccountUpdated,
        EventKind::ServiceAccountDeleted,
        EventKind::ApiKeyCreated,
        EventKind::ApiKeyRevoked,
        EventKind::SigningKeyCreated,
        EventKind::SigningKeyReplaced,
        EventKind::OAuthClientCreated,
        EventKind::OAuthClientUpdated,
        EventKind::OAuthClientDeleted,
        EventKind::OAuthClientSecretRotated,
        EventKind::RateLimitPolicyCreated,
        EventKind::RateLimitPolicyUpdated,
        EventKind::RateLimitPolicyDeleted,
        EventKind::TokenRevoked,
        EventKind::WebhookCreated,
        EventKind::WebhookUpdated,
        EventKind::WebhookSecretRotated,
        EventKind::WebhookDeleted,
    ];

    /// The name in `Event.type` and in NATS subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrganizationCreated => "organization.created",
            EventKind::OrganizationUpdated => "organization.updated",
            EventKind::OrganizationDeleted => "organization.deleted",
            EventKind::UserCreated => "user.created",
            EventKind::UserUpdated => "user.updated",
            EventKind::UserPasswordSet => "user.passwordSet",
            EventKind::UserDeleted => "user.deleted",
            EventKind::ServiceAccountCreated => "serviceAccount.created",
            EventKind::ServiceAccountUpdated => "serviceAccount.updated",
            EventKind::ServiceAccountDeleted => "serviceAccount.deleted",
            EventKind::ApiKeyCreated => "apiKey.created",
            EventKind::ApiKeyRevoked => "apiKey.revoked",
            EventKind::SigningKeyCreated => "signingKey.created",
            EventKind::SigningKeyReplaced => "signingKey.replaced",
            EventKind::OAuthClientCreated => "oauthClient.created",
            EventKind::OAuthClientUpdated => "oauthClient.updated",
            EventKind::OAuthClientDeleted => "oauthClient.deleted",
            EventKind::OAuthClientSecretRotated => "oauthClient.secretRotated",
            EventKind::RateLimitPolicyCreated => "rateLimitPolicy.created",
            EventKind::RateLimitPolicyUpdated => "rateLimitPolicy.updated",
            EventKind::RateLimitPolicyDeleted => "rateLimitPolicy.deleted",
            EventKind::TokenRevoked => "token.revoked",
            EventKind::WebhookCreated => "webhook.created",
            EventKind::WebhookUpdated => "webhook.updated",
            EventKind::WebhookSecretRotated => "webhook.secretRotated",
            EventKind::WebhookDeleted => "webhook.deleted",
        }
    }

    /// The kind named `s`; `None` for names this version does not know.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who makes a write and under which request. Every store write takes one,
/// so every event names its actor. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteContext {
    actor: Arc<str>,
    request_id: Arc<str>,
    trace_parent: Option<Arc<str>>,
}

impl WriteContext {
    /// A write by `actor` (a principal's resource name) for `request_id`,
    /// in the current trace (the call's server span, a job's span) when
    /// traces are on.
    pub fn new(actor: impl Into<Arc<str>>, request_id: impl Into<Arc<str>>) -> Self {
        let trace_parent = crate::otel::enabled()
            .then(|| opentelemetry::Context::map_current(crate::otel::propagation::traceparent))
            .flatten()
            .map(Arc::from);
        Self {
            actor: actor.into(),
            request_id: request_id.into(),
            trace_parent,
        }
    }

    /// The trace the write belongs to, as a W3C `traceparent`.
    pub fn trace_parent(&self) -> Option<&str> {
        self.trace_parent.as_deref()
    }

    /// A write by the server itself or an offline operator command;
    /// `what` stands in for the request id (e.g. `bootstrap`).
    pub fn system(what: &str) -> Self {
        Self::new(SYSTEM_ACTOR, what)
    }

    /// The actor's resource name, or [`SYSTEM_ACTOR`].
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The request the write belongs to.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_fields_are_the_differing_fields_without_bookkeeping() {
        use tollgate::tollgate::v1::User;
        let before = User {
            name: "organizations/a/users/u".into(),
            display_name: "U".into(),
            etag: "1".into(),
            ..User::default()
        };
        let after = User {
            display_name: "V".into(),
            roles: vec!["viewer".into()],
            etag: "2".into(),
            update_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..before.clone()
        };
        assert_eq!(
            changed_fields(&After::User(before.clone()), &After::User(after)),
            ["display_name", "roles"]
        );
        assert!(changed_fields(&After::User(before.clone()), &After::User(before)).is_empty());
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("user.exploded"), None);
        let names: std::collections::HashSet<_> =
            EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), EventKind::ALL.len());
    }
}
