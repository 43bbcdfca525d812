//! Webhooks: events delivered to users' HTTP endpoints. So far the
//! signing scheme ([`signature`]); the service, deliveries as jobs and
//! their retries follow.

pub mod signature;
