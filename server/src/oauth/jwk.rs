//! Signing key material: generation, the PKCS#8 form stored (encrypted) in
//! the database, raw JWS signatures, and the public JWK built from the
//! public key bytes. Signing goes through aws-lc-rs key pairs parsed once
//! per key, not through `jsonwebtoken::encode`, whose aws-lc backend parses
//! the private key again on every call (an RSA parse costs more than the
//! signature).

use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der},
    rand::SystemRandom,
    rsa::KeySize,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
        RSA_PKCS1_SHA256, RsaKeyPair,
    },
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::keys::Algorithm;
use crate::domain::{Error, Result};

/// A private key, parsed, ready to sign.
pub(crate) enum Signer {
    /// Ed25519 (`EdDSA`).
    Ed(Ed25519KeyPair),
    /// P-256 (`ES256`), fixed-width r ‖ s signatures as JWS wants.
    Ec(EcdsaKeyPair),
    /// RSA 2048 (`RS256`), PKCS#1 v1.5 padding.
    Rsa(RsaKeyPair),
}

fn failed(what: &str) -> Error {
    Error::Internal(format!("signing key: {what}"))
}

impl Signer {
    /// A fresh key of `alg` and its PKCS#8 (v1) DER.
    pub(crate) fn generate(alg: Algorithm) -> Result<(Self, Vec<u8>)> {
        let der = match alg {
            Algorithm::EdDSA => Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8v1())
                .map_err(|_| failed("Ed25519 generation"))?
                .as_ref()
                .to_vec(),
            Algorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map_err(|_| failed("P-256 generation"))?
                .as_ref()
                .to_vec(),
            Algorithm::RS256 => {
                let key =
                    RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| failed("RSA generation"))?;
                let der: Pkcs8V1Der<'static> =
                    key.as_der().map_err(|_| failed("RSA PKCS#8 encoding"))?;
                der.as_ref().to_vec()
            }
        };
        Ok((Self::from_pkcs8(alg, &der)?, der))
    }

    /// Parses the PKCS#8 DER of a key of `alg`.
    pub(crate) fn from_pkcs8(alg: Algorithm, der: &[u8]) -> Result<Self> {
        Ok(match alg {
            Algorithm::EdDSA => Signer::Ed(
                Ed25519KeyPair::from_pkcs8(der).map_err(|_| failed("bad Ed25519 PKCS#8"))?,
            ),
            Algorithm::ES256 => Signer::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| failed("bad P-256 PKCS#8"))?,
            ),
            Algorithm::RS256 => {
                Signer::Rsa(RsaKeyPair::from_pkcs8(der).map_err(|_| failed("bad RSA PKCS#8"))?)
            }
        })
    }

    /// The JWS signature of `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match self {
            Signer::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
            Signer::Ec(k) => k
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| failed("ES256 signature")),
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
                    .map_err(|_| failed("RS256 signature"))?;
                Ok(sig)
            }
        }
    }

    /// The public key as a JWK (RFC 7517/8037) for `kid`: public members
    /// only, plus `kid`, `alg` and `use: sig`.
    pub(crate) fn public_jwk(&self, alg: Algorithm, kid: &str) -> Result<Map<String, Value>> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = match self {
            Signer::Ed(k) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64(k.public_key().as_ref()),
            }),
            Signer::Ec(k) => {
                // SEC1 uncompressed: 0x04 ‖ x ‖ y.
                let point = k.public_key().as_ref();
                if point.len() != 65 || point[0] != 4 {
                    return Err(failed("unexpected P-256 public key encoding"));
                }
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64(&point[1..33]),
                    "y": b64(&point[33..]),
                })
            }
            Signer::Rsa(k) => {
                let public = k.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
        };
        let Value::Object(map) = &mut jwk else {
            return Err(failed("JWK is not an object"));
        };
        map.insert("kid".into(), kid.into());
        map.insert("alg".into(), alg.as_str().into());
        map.insert("use".into(), "sig".into());
        Ok(std::mem::take(map))
    }
}

/// The verifying key of a public JWK, through jsonwebtoken's own JWK
/// parser, so the published document and the verifier cannot disagree.
pub(crate) fn decoding_key(jwk: &Map<String, Value>) -> Result<jsonwebtoken::DecodingKey> {
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(Value::Object(jwk.clone()))
        .map_err(|e| failed(&format!("unreadable JWK: {e}")))?;
    jsonwebtoken::DecodingKey::from_jwk(&parsed).map_err(|e| failed(&format!("JWK: {e}")))
}

/// A JSON object as a `google.protobuf.Struct` (JWK members are strings,
/// but any JSON is carried).
pub(crate) fn to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
