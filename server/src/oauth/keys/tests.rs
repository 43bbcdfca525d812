//! Sign/verify round trips, every refusal of `verify` on hand-built hostile
//! tokens, and the JWKS's public-only members. The key ring runs on a
//! temporary SQLite store; rotation on both backends is in
//! `tests/e2e/signing_keys.rs`.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::*;
use crate::store::{CacheConfig, Db, Target};

const ISS: &str = "https://auth.example.com";
const AUD: &str = "https://api.example.com";

async fn store(dir: &tempfile::TempDir) -> Store {
    let db = Db::new(
        Target::Sqlite(dir.path().join("t.db")),
        4,
        Duration::from_secs(5),
    )
    .unwrap();
    db.migrate().await.unwrap();
    Store::new(db, CacheConfig::default())
}

pub(crate) async fn ring() -> (tempfile::TempDir, Store, KeyRing) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let (kek, _) = Kek::generate().unwrap();
    let ring = KeyRing::load_or_init(&store, kek, Clock::system())
        .await
        .unwrap();
    (dir, store, ring)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Value,
    exp: i64,
    nbf: i64,
    iat: i64,
}

fn secs() -> i64 {
    now_micros() / 1_000_000
}

fn claims() -> Claims {
    let now = secs();
    Claims {
        iss: ISS.into(),
        sub: "organizations/acme/users/dana".into(),
        aud: json!(AUD),
        exp: now + 600,
        nbf: now - 5,
        iat: now,
    }
}

fn expect() -> Expect<'static> {
    Expect {
        typ: "at+jwt",
        issuer: ISS,
        audience: Some(AUD),
        leeway_secs: 60,
    }
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn parts(token: &str) -> (Value, Value, String) {
    let p: Vec<&str> = token.split('.').collect();
    assert_eq!(p.len(), 3);
    let dec = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (dec(p[0]), dec(p[1]), p[2].to_owned())
}

/// `token` with its header replaced by `header`, payload and signature
/// kept.
fn with_header(token: &str, header: &Value) -> String {
    let (_, _, sig) = parts(token);
    let payload = token.split('.').nth(1).unwrap();
    format!("{}.{payload}.{sig}", b64json(header))
}

fn verify(ring: &KeyRing, token: &str, expect: &Expect<'_>) -> Result<Claims, VerifyError> {
    ring.verify::<Claims>(token, expect)
}

#[tokio::test]
async fn every_algorithm_signs_and_verifies_and_the_jwks_verifies_too() {
    let (_dir, _store, ring) = ring().await;
    assert_eq!(ring.algorithms(), &Algorithm::ALL);
    let jwks: Value = serde_json::from_slice(&ring.jwks()).unwrap();
    for alg in Algorithm::ALL {
        let c = claims();
        let token = ring.sign(alg, "at+jwt", &c).unwrap();
        let (header, payload, _) = parts(&token);
        assert_eq!(header["alg"], alg.as_str());
        assert_eq!(header["typ"], "at+jwt");
        let kid = header["kid"].as_str().unwrap().to_owned();
        assert_eq!(ring.active_kid(alg).as_deref(), Some(kid.as_str()));
        assert_eq!(payload["sub"], c.sub);
        assert_eq!(verify(&ring, &token, &expect()).unwrap(), c, "{alg}");

        // An outside verifier with only the JWKS (jsonwebtoken's own JWK
        // parsing) accepts it too.
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap_or_else(|| panic!("{kid} not in the JWKS"));
        assert_eq!(jwk["alg"], alg.as_str());
        assert_eq!(jwk["use"], "sig");
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(alg.jwt());
        v.set_audience(&[AUD]);
        v.set_issuer(&[ISS]);
        let data = jsonwebtoken::decode::<Claims>(&token, &key, &v).unwrap();
        assert_eq!(data.claims, c);

        // ID tokens: typ JWT, an audience array.
        let mut id = claims();
        id.aud = json!(["client-1", AUD]);
        let token = ring.sign(alg, "JWT", &id).unwrap();
        let e = Expect {
            typ: "JWT",
            audience: Some("client-1"),
            ..expect()
        };
        assert_eq!(verify(&ring, &token, &e).unwrap(), id);
    }
}

#[tokio::test]
async fn the_jwks_holds_public_members_only() {
    let (_dir, _store, ring) = ring().await;
    let jwks: Value = serde_json::from_slice(&ring.jwks()).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "one key per algorithm at first start");
    let public = ["kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"];
    let mut kty = Vec::new();
    for key in keys {
        let members: Vec<&String> = key.as_object().unwrap().keys().collect();
        for m in &members {
            assert!(public.contains(&m.as_str()), "private member {m} in {key}");
        }
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(key.get(private).is_none(), "{private} in {key}");
        }
        kty.push(key["kty"].as_str().unwrap().to_owned());
    }
    kty.sort();
    assert_eq!(kty, ["EC", "OKP", "RSA"]);
}

#[tokio::test]
async fn hostile_tokens_are_refused_each_for_its_reason() {
    let (_dir, _store, ring) = ring().await;
    let ed = ring.sign(Algorithm::EdDSA, "at+jwt", &claims()).unwrap();
    let (ed_header, _, _) = parts(&ed);
    let ed_kid = ed_header["kid"].as_str().unwrap().to_owned();
    let e = expect();

    // alg: none, with and without a signature.
    let payload = b64json(&serde_json::to_value(claims()).unwrap());
    let none = b64json(&json!({"alg": "none", "kid": ed_kid, "typ": "at+jwt"}));
    for token in [format!("{none}.{payload}."), format!("{none}.{payload}")] {
        let r = verify(&ring, &token, &e);
        assert!(
            matches!(
                r,
                Err(VerifyError::UnsupportedAlgorithm | VerifyError::Malformed)
            ),
            "{r:?}"
        );
    }
    assert_eq!(
        verify(&ring, &format!("{none}.{payload}."), &e),
        Err(VerifyError::UnsupportedAlgorithm)
    );

    // HS256 keyed with the public key (the JWK's x, and the whole JWKS
    // document), naming the Ed25519 and the RSA kid.
    let jwks: Value = serde_json::from_slice(&ring.jwks()).unwrap();
    for jwk in jwks["keys"].as_array().unwrap() {
        let kid = jwk["kid"].as_str().unwrap();
        let public = jwk
            .get("x")
            .or_else(|| jwk.get("n"))
            .and_then(Value::as_str)
            .unwrap();
        for secret in [
            URL_SAFE_NO_PAD.decode(public).unwrap(),
            public.as_bytes().to_vec(),
            ring.jwks().to_vec(),
        ] {
            for alg in [
                jsonwebtoken::Algorithm::HS256,
                jsonwebtoken::Algorithm::HS384,
                jsonwebtoken::Algorithm::HS512,
            ] {
                let mut header = jsonwebtoken::Header::new(alg);
                header.kid = Some(kid.to_owned());
                header.typ = Some("at+jwt".into());
                let token = jsonwebtoken::encode(
                    &header,
                    &claims(),
                    &jsonwebtoken::EncodingKey::from_secret(&secret),
                )
                .unwrap();
                assert_eq!(
                    verify(&ring, &token, &e),
                    Err(VerifyError::UnsupportedAlgorithm),
                    "{alg:?} with {kid}"
                );
            }
        }
    }

    // A tampered payload, and a tampered signature.
    let mut evil = claims();
    evil.sub = "organizations/root/serviceAccounts/admin".into();
    let p: Vec<&str> = ed.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        p[0],
        b64json(&serde_json::to_value(&evil).unwrap()),
        p[2]
    );
    assert_eq!(verify(&ring, &tampered, &e), Err(VerifyError::BadSignature));
    let mut sig = URL_SAFE_NO_PAD.decode(p[2]).unwrap();
    sig[0] ^= 1;
    let bad_sig = format!("{}.{}.{}", p[0], p[1], URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(verify(&ring, &bad_sig, &e), Err(VerifyError::BadSignature));
    // Signatures of another algorithm's key, under this key's header.
    let es = ring.sign(Algorithm::ES256, "at+jwt", &claims()).unwrap();
    let swapped = format!("{}.{}.{}", p[0], p[1], es.split('.').nth(2).unwrap());
    assert_eq!(verify(&ring, &swapped, &e), Err(VerifyError::BadSignature));

    // The type: wrong, missing; the RFC 9068 long form and case pass.
    let id = ring.sign(Algorithm::EdDSA, "JWT", &claims()).unwrap();
    assert_eq!(verify(&ring, &id, &e), Err(VerifyError::WrongType));
    let no_typ = with_header(&ed, &json!({"alg": "EdDSA", "kid": ed_kid}));
    assert_eq!(verify(&ring, &no_typ, &e), Err(VerifyError::WrongType));
    for typ in ["application/at+jwt", "AT+JWT", "Application/AT+jwt"] {
        let t = ring.sign(Algorithm::EdDSA, typ, &claims()).unwrap();
        assert!(verify(&ring, &t, &e).is_ok(), "{typ}");
    }
    let t = ring
        .sign(Algorithm::EdDSA, "application/jwt", &claims())
        .unwrap();
    assert_eq!(verify(&ring, &t, &e), Err(VerifyError::WrongType));

    // Times: expired, not yet valid; within the leeway both pass.
    let now = secs();
    let timed = |exp: i64, nbf: i64| {
        let mut c = claims();
        c.exp = exp;
        c.nbf = nbf;
        ring.sign(Algorithm::EdDSA, "at+jwt", &c).unwrap()
    };
    assert_eq!(
        verify(&ring, &timed(now - 3600, now - 7200), &e),
        Err(VerifyError::Expired)
    );
    assert_eq!(
        verify(&ring, &timed(now + 7200, now + 3600), &e),
        Err(VerifyError::NotYetValid)
    );
    assert!(verify(&ring, &timed(now - 10, now - 600), &e).is_ok());
    assert!(verify(&ring, &timed(now + 600, now + 10), &e).is_ok());
    let strict = Expect {
        leeway_secs: 0,
        ..e
    };
    assert_eq!(
        verify(&ring, &timed(now - 10, now - 600), &strict),
        Err(VerifyError::Expired)
    );

    // exp and nbf are required.
    for missing in ["exp", "nbf"] {
        let mut c = serde_json::to_value(claims()).unwrap();
        c.as_object_mut().unwrap().remove(missing);
        let t = ring.sign(Algorithm::EdDSA, "at+jwt", &c).unwrap();
        assert_eq!(
            ring.verify::<Value>(&t, &e),
            Err(VerifyError::Malformed),
            "{missing}"
        );
    }

    // Issuer: wrong, missing.
    let mut c = claims();
    c.iss = "https://evil.example.com".into();
    let t = ring.sign(Algorithm::EdDSA, "at+jwt", &c).unwrap();
    assert_eq!(verify(&ring, &t, &e), Err(VerifyError::WrongIssuer));
    let mut c = serde_json::to_value(claims()).unwrap();
    c.as_object_mut().unwrap().remove("iss");
    let t = ring.sign(Algorithm::EdDSA, "at+jwt", &c).unwrap();
    assert_eq!(ring.verify::<Value>(&t, &e), Err(VerifyError::WrongIssuer));

    // Audience: wrong string, wrong array, missing; skipped when None.
    for aud in [json!("https://other.example.com"), json!(["a", "b"])] {
        let mut c = claims();
        c.aud = aud;
        let t = ring.sign(Algorithm::EdDSA, "at+jwt", &c).unwrap();
        assert_eq!(verify(&ring, &t, &e), Err(VerifyError::WrongAudience));
        let any = Expect {
            audience: None,
            ..e
        };
        assert!(verify(&ring, &t, &any).is_ok());
    }
    let mut c = serde_json::to_value(claims()).unwrap();
    c.as_object_mut().unwrap().remove("aud");
    let t = ring.sign(Algorithm::EdDSA, "at+jwt", &c).unwrap();
    assert_eq!(
        ring.verify::<Value>(&t, &e),
        Err(VerifyError::WrongAudience)
    );

    // Unknown and missing kid.
    let unknown = with_header(
        &ed,
        &json!({"alg": "EdDSA", "kid": "no-such-key", "typ": "at+jwt"}),
    );
    assert_eq!(verify(&ring, &unknown, &e), Err(VerifyError::UnknownKey));
    let no_kid = with_header(&ed, &json!({"alg": "EdDSA", "typ": "at+jwt"}));
    assert_eq!(verify(&ring, &no_kid, &e), Err(VerifyError::UnknownKey));
    // A token of another Tollgate (another key ring).
    let (_dir2, _store2, other) = super::tests::ring().await;
    let foreign = other.sign(Algorithm::EdDSA, "at+jwt", &claims()).unwrap();
    assert_eq!(verify(&ring, &foreign, &e), Err(VerifyError::UnknownKey));

    // The algorithm of another key than the kid's: ES256 and RS256 headers
    // naming the Ed25519 kid, with signatures by those algorithms' keys.
    for (alg, other_alg) in [("ES256", Algorithm::ES256), ("RS256", Algorithm::RS256)] {
        let signed = ring.sign(other_alg, "at+jwt", &claims()).unwrap();
        let t = with_header(
            &signed,
            &json!({"alg": alg, "kid": ed_kid, "typ": "at+jwt"}),
        );
        assert_eq!(verify(&ring, &t, &e), Err(VerifyError::AlgorithmMismatch));
    }

    // Shapes: not three parts, not base64, not JSON, a crit header.
    let crit = with_header(
        &ed,
        &json!({"alg": "EdDSA", "kid": ed_kid, "typ": "at+jwt", "crit": ["exp"]}),
    );
    for bad in [
        "",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        &format!("{}.e30.sig", URL_SAFE_NO_PAD.encode("not json")),
        &crit,
    ] {
        assert_eq!(verify(&ring, bad, &e), Err(VerifyError::Malformed), "{bad}");
    }

    // Every refusal is UNAUTHENTICATED with a short message, no detail.
    let err: Error = VerifyError::BadSignature.into();
    assert!(matches!(err, Error::Unauthenticated(ref m) if m == "bad token signature"));
}

#[tokio::test]
async fn a_ring_with_another_kek_refuses_the_stored_keys() {
    let (_dir, store, ring) = ring().await;
    drop(ring);
    let (other, _) = Kek::generate().unwrap();
    let e = KeyRing::load_or_init(&store, other, Clock::system())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::FailedPrecondition {
                reason: "KEY_ENCRYPTION_KEY_MISMATCH",
                ..
            }
        ),
        "{e}"
    );
}
