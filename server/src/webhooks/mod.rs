//! Webhooks: events delivered to users' HTTP endpoints.
//!
//! - [`signature`]: the Standard Webhooks signing scheme.
//! - [`sender`]: one signed POST, with the SSRF guard on every address.
//! - [`pump`]: the job that sends a webhook's deliveries in order.
//!
//! The API is `api::webhooks`; the deliveries are made by the relay
//! (`store::webhooks::fan_out`).

pub mod pump;
pub mod sender;
pub mod signature;

use prost::Message as _;
use prost_reflect::DynamicMessage;

use crate::events::Event;

/// The body of `event`'s deliveries, in the Standard Webhooks payload
/// shape: `{"type", "timestamp", "data"}`, where `data` is the Event in
/// its JSON form (as ListEvents shows it) and `timestamp` its time.
/// `None` (logged) when the event cannot be rendered.
pub fn body(event: &Event) -> Option<String> {
    let render = || -> Result<String, String> {
        let pool = crate::http::descriptors();
        let event_desc = pool
            .get_message_by_name("tollgate.v1.Event")
            .ok_or("no descriptor of tollgate.v1.Event")?;
        let time_desc = pool
            .get_message_by_name("google.protobuf.Timestamp")
            .ok_or("no descriptor of google.protobuf.Timestamp")?;
        let data = DynamicMessage::decode(event_desc, event.encode_to_vec().as_slice())
            .map_err(|e| e.to_string())?;
        let time = DynamicMessage::decode(
            time_desc,
            event.time.unwrap_or_default().encode_to_vec().as_slice(),
        )
        .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut out, &event.r#type).map_err(|e| e.to_string())?;
        out.extend_from_slice(b",\"timestamp\":");
        crate::http::json::encode_into(&time, &mut out).map_err(|e| e.to_string())?;
        out.extend_from_slice(b",\"data\":");
        crate::http::json::encode_into(&data, &mut out).map_err(|e| e.to_string())?;
        out.push(b'}');
        String::from_utf8(out).map_err(|e| e.to_string())
    };
    render()
        .inspect_err(|e| tracing::error!(event = event.id, error = %e, "cannot render a webhook body; no delivery made"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_standard_payload_around_the_event() {
        let event = Event {
            id: 42,
            r#type: "user.created".into(),
            organization: "organizations/acme".into(),
            resource: "organizations/acme/users/ada".into(),
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Event::default()
        };
        let body: serde_json::Value = serde_json::from_str(&body(&event).unwrap()).unwrap();
        assert_eq!(body["type"], "user.created");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(body["data"]["id"], "42");
        assert_eq!(body["data"]["resource"], "organizations/acme/users/ada");
    }
}
