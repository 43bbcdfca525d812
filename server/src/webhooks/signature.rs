//! Standard Webhooks signatures (<https://www.standardwebhooks.com>):
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//! one per secret, space-separated, so a receiver holding either the old
//! or the new secret verifies during a rotation's overlap. Secrets are
//! `whsec_` and the base64 of their key bytes.
//!
//! Hand-written (the scheme is a dozen lines; the `standardwebhooks` crate
//! only verifies against the wall clock and pulls an older base64): the
//! tests check it against the specification's own example and against the
//! reference Python implementation.

use aws_lc_rs::hmac;
use base64::{Engine as _, engine::general_purpose::STANDARD};

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key bytes of a secret Tollgate generates.
const SECRET_BYTES: usize = 32;

/// The message id header.
pub const ID_HEADER: &str = "webhook-id";
/// The timestamp header (seconds since the epoch).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signatures header.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// A signing secret.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never its bytes.
        f.write_str("Secret(…)")
    }
}

/// Why a secret's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct BadSecret;

impl Secret {
    /// Reads `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, BadSecret> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| BadSecret)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(BadSecret);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// A new random secret, as text (shown once, then stored encrypted).
    pub fn generate() -> String {
        let mut bytes = [0u8; SECRET_BYTES];
        // The system's generator failing leaves nothing safe to do.
        #[expect(clippy::expect_used, reason = "no secret without randomness")]
        aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator");
        format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
    }

    /// `v1,<base64 signature>` of one message.
    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// The `webhook-signature` value of message `id` sent at `timestamp`
/// (seconds) with `body`: one signature per secret, space-separated.
pub fn signature(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three headers of a delivery, as `(name, value)`.
pub fn headers(
    secrets: &[Secret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        (ID_HEADER, id.to_owned()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, signature(secrets, id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's example (also the reference libraries' test).
    #[test]
    fn signs_the_specifications_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &[secret],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotation_signs_with_both_secrets() {
        let old = Secret::parse(&Secret::generate()).unwrap();
        let new = Secret::parse(&Secret::generate()).unwrap();
        let both = signature(&[old.clone(), new.clone()], "msg_1", 1, b"{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(
            parts,
            [
                old.sign("msg_1", 1, b"{}").as_str(),
                new.sign("msg_1", 1, b"{}").as_str()
            ]
        );
        assert_ne!(parts[0], parts[1]);
        // Anything else in the message changes the signature.
        assert_ne!(
            signature(std::slice::from_ref(&old), "msg_2", 1, b"{}"),
            parts[0]
        );
        assert_ne!(
            signature(std::slice::from_ref(&old), "msg_1", 2, b"{}"),
            parts[0]
        );
        assert_ne!(signature(&[old], "msg_1", 1, b"{ }"), parts[0]);
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        let generated = Secret::generate();
        assert!(generated.starts_with(SECRET_PREFIX));
        assert_eq!(
            STANDARD.decode(&generated[6..]).unwrap().len(),
            SECRET_BYTES
        );
        assert_ne!(Secret::generate(), generated);
        for bad in [
            "",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!",
            "whsec_c2hvcnQ=",
        ] {
            assert_eq!(Secret::parse(bad).unwrap_err(), BadSecret, "{bad}");
        }
        let secret = Secret::parse(&generated).unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(…)");
    }
}
