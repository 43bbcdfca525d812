//! The JSON writer behind [`super::json::encode_into`]: the same output as
//! prost-reflect's serde serializer with [`super::json`]'s options, written
//! straight into a byte buffer.
//!
//! Written by hand for speed, and only that: the transcoding benchmark
//! found prost-reflect's serializer spending 1.4 µs of a call on two
//! Timestamps, since it transcodes each into `prost_types::Timestamp` and
//! formats it through `Display`. Here a Timestamp is written from its two
//! fields, and the messages and scalars around it without serde's
//! indirection. The well-known types whose JSON forms are intricate
//! (`Any`, `Struct`, `Value`, `ListValue`, `Duration`, `FieldMask`, the
//! wrappers, `Empty`) are still handed to prost-reflect, so their rules
//! live in one place. `json.rs`'s tests and the transcoding table hold the
//! two writers to the same bytes.

use base64::Engine as _;
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage as _, SerializeOptions, Value};

/// Why a message cannot be written (an out-of-range Timestamp, or what
/// prost-reflect refuses).
pub type WriteError = String;

/// Appends `msg` as JSON.
pub fn write_message(
    msg: &DynamicMessage,
    out: &mut Vec<u8>,
    options: &SerializeOptions,
) -> Result<(), WriteError> {
    let desc = msg.descriptor();
    let name = desc.full_name();
    if name == "google.protobuf.Timestamp" {
        return write_timestamp(msg, out);
    }
    if name.starts_with("google.protobuf.") && is_delegated(name) {
        let mut ser = serde_json::Serializer::new(&mut *out);
        return msg
            .serialize_with_options(&mut ser, options)
            .map_err(|e| e.to_string());
    }
    out.push(b'{');
    let mut first = true;
    // In field-number order, as prost-reflect writes them; declaration
    // order almost always is that, and then nothing is collected.
    if desc.fields().is_sorted_by_key(|f| f.number()) {
        write_fields(msg, desc.fields(), &mut first, out, options)?;
    } else {
        let mut fields: Vec<_> = desc.fields().collect();
        fields.sort_by_key(prost_reflect::FieldDescriptor::number);
        write_fields(msg, fields.into_iter(), &mut first, out, options)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_fields(
    msg: &DynamicMessage,
    fields: impl Iterator<Item = prost_reflect::FieldDescriptor>,
    first: &mut bool,
    out: &mut Vec<u8>,
    options: &SerializeOptions,
) -> Result<(), WriteError> {
    for field in fields {
        // Fields with presence (messages, oneof members, `optional`) only
        // when set; the others always, at their default when unset.
        if field.supports_presence() && !msg.has_field(&field) {
            continue;
        }
        if !*first {
            out.push(b',');
        }
        *first = false;
        write_str(field.json_name(), out);
        out.push(b':');
        let value = msg.get_field(&field);
        write_value(&value, &field.kind(), out, options)?;
    }
    Ok(())
}

/// The well-known types left to prost-reflect.
fn is_delegated(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.Any"
            | "google.protobuf.Duration"
            | "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.FieldMask"
            | "google.protobuf.Empty"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

fn write_value(
    value: &Value,
    kind: &Kind,
    out: &mut Vec<u8>,
    options: &SerializeOptions,
) -> Result<(), WriteError> {
    match value {
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::I32(n) => write_display(*n, out),
        Value::U32(n) => write_display(*n, out),
        Value::I64(n) => {
            out.push(b'"');
            write_display(*n, out);
            out.push(b'"');
        }
        Value::U64(n) => {
            out.push(b'"');
            write_display(*n, out);
            out.push(b'"');
        }
        Value::F32(f) => write_float(f64::from(*f), f.is_finite(), out, |o| {
            serde_json::to_writer(o, f).map_err(|e| e.to_string())
        })?,
        Value::F64(f) => write_float(*f, f.is_finite(), out, |o| {
            serde_json::to_writer(o, f).map_err(|e| e.to_string())
        })?,
        Value::String(s) => write_str(s, out),
        Value::Bytes(b) => {
            out.push(b'"');
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .as_bytes(),
            );
            out.push(b'"');
        }
        Value::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => write_str(v.name(), out),
            None => write_display(*n, out),
        },
        Value::Message(m) => write_message(m, out, options)?,
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, kind, out, options)?;
            }
            out.push(b']');
        }
        Value::Map(map) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            // Sorted, so the output does not depend on hash order.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match key {
                    MapKey::String(s) => write_str(s, out),
                    MapKey::Bool(b) => {
                        out.extend_from_slice(if *b { b"\"true\"" } else { b"\"false\"" })
                    }
                    MapKey::I32(n) => write_quoted(*n, out),
                    MapKey::I64(n) => write_quoted(*n, out),
                    MapKey::U32(n) => write_quoted(*n, out),
                    MapKey::U64(n) => write_quoted(*n, out),
                }
                out.push(b':');
                write_value(value, &value_kind, out, options)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_float(
    f: f64,
    finite: bool,
    out: &mut Vec<u8>,
    finite_writer: impl FnOnce(&mut Vec<u8>) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    if finite {
        finite_writer(out)
    } else {
        out.extend_from_slice(if f.is_nan() {
            b"\"NaN\"".as_slice()
        } else if f > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
        Ok(())
    }
}

fn write_display(n: impl itoa::Integer, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn write_quoted(n: impl itoa::Integer, out: &mut Vec<u8>) {
    out.push(b'"');
    write_display(n, out);
    out.push(b'"');
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json's escaping; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// RFC 3339 in UTC with the fraction in groups of three digits, as
/// `prost_types::Timestamp`'s `Display` writes it, in the range the JSON
/// mapping allows (years 1 to 9999).
fn write_timestamp(msg: &DynamicMessage, out: &mut Vec<u8>) -> Result<(), WriteError> {
    let seconds = match msg.get_field_by_number(1).as_deref() {
        Some(Value::I64(s)) => *s,
        _ => 0,
    };
    let nanos = match msg.get_field_by_number(2).as_deref() {
        Some(Value::I32(n)) => *n,
        _ => 0,
    };
    // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const MIN: i64 = -62_135_596_800;
    const MAX: i64 = 253_402_300_799;
    if !(MIN..=MAX).contains(&seconds) || !(0..1_000_000_000).contains(&nanos) {
        return Err(format!("timestamp out of range: {seconds}s {nanos}ns"));
    }
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // Fixed-width digits by hand: `write!` costs more than the rest of
    // the field.
    let mut text = *b"\"0000-00-00T00:00:00";
    put_digits(&mut text[1..5], year);
    put_digits(&mut text[6..8], i64::from(month));
    put_digits(&mut text[9..11], i64::from(day));
    put_digits(&mut text[12..14], secs_of_day / 3600);
    put_digits(&mut text[15..17], secs_of_day / 60 % 60);
    put_digits(&mut text[18..20], secs_of_day % 60);
    out.extend_from_slice(&text);
    if nanos != 0 {
        let (value, width) = if nanos % 1_000_000 == 0 {
            (nanos / 1_000_000, 3)
        } else if nanos % 1_000 == 0 {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        let mut fraction = [b'.'; 10];
        put_digits(&mut fraction[1..=width], i64::from(value));
        out.extend_from_slice(&fraction[..=width]);
    }
    out.extend_from_slice(b"Z\"");
    Ok(())
}

/// Writes `n` (not negative) as decimal digits filling `into`, zero-padded.
fn put_digits(into: &mut [u8], mut n: i64) {
    for slot in into.iter_mut().rev() {
        // A digit: always below 10.
        *slot = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a
/// proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timestamp(seconds: i64, nanos: i32) -> String {
        let pool = crate::http::descriptors();
        let desc = pool
            .get_message_by_name("google.protobuf.Timestamp")
            .unwrap();
        let mut msg = DynamicMessage::new(desc);
        msg.set_field_by_number(1, Value::I64(seconds));
        msg.set_field_by_number(2, Value::I32(nanos));
        let mut out = Vec::new();
        write_message(&msg, &mut out, &SerializeOptions::new()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_match_prost_types_display() {
        for (s, n) in [
            (0, 0),
            (1_764_087_540, 304_616_000),
            (1_764_087_540, 5_000_000),
            (1_764_087_540, 7),
            (-1, 999_999_999),
            (951_782_400, 0),
            (-62_135_596_800, 0),
            (253_402_300_799, 999_000_000),
            (-2_208_988_800, 0),
        ] {
            let expected = format!(
                "\"{}\"",
                prost_types::Timestamp {
                    seconds: s,
                    nanos: n
                }
            );
            assert_eq!(timestamp(s, n), expected, "{s} {n}");
        }
    }
}

#[cfg(test)]
mod differential {
    use prost::Message as _;
    use prost_reflect::DynamicMessage;
    use tollgate::tollgate::v1 as pb;

    use super::*;

    /// The same bytes as prost-reflect's serializer with the options
    /// `json.rs` uses, on messages with every kind of field our protos
    /// have: timestamps, enums (known and unknown), repeated strings,
    /// oneofs, nested messages, `Any` details, and defaults left unset.
    #[test]
    fn writes_what_prost_reflect_writes() {
        let options = SerializeOptions::new()
            .stringify_64_bit_integers(true)
            .use_enum_numbers(false)
            .use_proto_field_name(false)
            .skip_default_fields(false);
        let pool = crate::http::descriptors();
        let ts = |s, n| {
            Some(prost_types::Timestamp {
                seconds: s,
                nanos: n,
            })
        };
        let user = pb::User {
            name: "organizations/a/users/b".into(),
            display_name: "Bé \"quoted\" \u{1}".into(),
            email: "b@example.com".into(),
            state: 1,
            roles: vec!["viewer".into(), "editor".into()],
            create_time: ts(1_764_087_540, 304_616_000),
            ..Default::default()
        };
        let samples: Vec<(&str, Vec<u8>)> = vec![
            ("tollgate.v1.User", user.encode_to_vec()),
            (
                "tollgate.v1.User",
                pb::User {
                    state: 99,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "tollgate.v1.ListUsersResponse",
                pb::ListUsersResponse {
                    users: vec![user.clone(), pb::User::default()],
                    next_page_token: "t".into(),
                }
                .encode_to_vec(),
            ),
            (
                "tollgate.v1.ApiKey",
                pb::ApiKey {
                    name: "k".into(),
                    expire_time: ts(-1, 7),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "tollgate.v1.Event",
                pb::Event {
                    after: Some(pb::event::After::User(user.clone())),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "google.rpc.Status",
                crate::http::error::rpc_status(&tonic::Status::from(
                    crate::domain::Error::invalid("user.email", "is not an email address"),
                ))
                .encode_to_vec(),
            ),
        ];
        for (name, bytes) in samples {
            let desc = pool.get_message_by_name(name).unwrap();
            let msg = DynamicMessage::decode(desc, bytes.as_slice()).unwrap();
            let mut ours = Vec::new();
            write_message(&msg, &mut ours, &options).unwrap();
            let mut theirs = Vec::new();
            msg.serialize_with_options(&mut serde_json::Serializer::new(&mut theirs), &options)
                .unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap(),
                "{name}"
            );
        }
    }
}
