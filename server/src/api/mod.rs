//! One module per proto service. Handlers stay thin: read the caller the
//! authenticate layer resolved, validate, call the store, convert.

pub mod api_keys;
pub mod error;
pub mod organizations;
pub mod service_accounts;
pub mod users;

use base64::{Engine, engine::general_purpose::STANDARD};
use prost::Message;
use tonic::{Request, Status};

use crate::{
    domain::{Error, Result},
    layers::Caller,
    store::{
        EventPayload,
        api_keys::ApiKeyRow,
        organizations::OrganizationRow,
        principals::{ServiceAccountRow, UserRow},
    },
};

/// The permit the authorize layer inserted for this call. Its absence on a
/// non-public method is a wiring bug, answered as UNAUTHENTICATED rather
/// than trusting anyone.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| {
        Error::Unauthenticated(crate::layers::authenticate::CREDENTIALS_REQUIRED.into()).into()
    })
}

/// Microseconds since the epoch to a protobuf timestamp.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// A protobuf timestamp to microseconds, naming `field` when invalid.
pub fn micros(field: &str, ts: &prost_types::Timestamp) -> Result<i64> {
    if !(0..1_000_000_000).contains(&ts.nanos) || !(0..=253_402_300_799).contains(&ts.seconds) {
        return Err(Error::invalid(field, "is not a valid timestamp"));
    }
    Ok(ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000))
}

/// The filter and page of a List request. The page token is bound to the
/// collection, parent and filter, so it cannot be replayed against another
/// query.
pub fn list_params(
    collection: &str,
    parent: &str,
    filter: &str,
    page_size: i32,
    page_token: &str,
    fields: &[(&'static str, crate::domain::filter::FieldType)],
) -> Result<(
    Vec<crate::domain::filter::Predicate>,
    crate::domain::page::PageRequest,
)> {
    let predicates = crate::domain::filter::parse(filter, fields)?;
    let page = crate::domain::page::PageRequest::new(
        page_size,
        page_token,
        &format!("{collection}\n{parent}\n{filter}"),
    )?;
    Ok((predicates, page))
}

/// The state of a new principal: ACTIVE when unset.
pub fn initial_state(field: &str, state: i32) -> Result<i16, crate::domain::FieldViolation> {
    if state == 0 {
        Ok(1)
    } else {
        principal_state(field, state)
    }
}

/// A settable principal state (ACTIVE = 1, DISABLED = 2), or the violation
/// naming `field`.
pub fn principal_state(field: &str, state: i32) -> Result<i16, crate::domain::FieldViolation> {
    match state {
        1 => Ok(1),
        2 => Ok(2),
        _ => Err(crate::domain::FieldViolation::new(
            field,
            "must be ACTIVE or DISABLED",
        )),
    }
}

fn encode<M: Message>(m: &M) -> String {
    STANDARD.encode(m.encode_to_vec())
}

impl EventPayload for OrganizationRow {
    fn payload(&self) -> String {
        encode(&organizations::to_proto(self))
    }
}

impl EventPayload for UserRow {
    fn payload(&self) -> String {
        encode(&users::to_proto(self))
    }
}

impl EventPayload for ServiceAccountRow {
    fn payload(&self) -> String {
        encode(&service_accounts::to_proto(self))
    }
}

impl EventPayload for ApiKeyRow {
    fn payload(&self) -> String {
        encode(&api_keys::to_proto(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for m in [0, 1, 1_767_225_600_123_456, 999_999] {
            assert_eq!(micros("t", &timestamp(m)).unwrap(), m);
        }
        let bad = prost_types::Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert!(micros("t", &bad).is_err());
    }
}
