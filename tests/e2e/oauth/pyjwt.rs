//! PyJWT, an independent JOSE implementation, verifies Tollgate's access
//! tokens offline against the published JWKS, for each signing algorithm,
//! as a service in another language would; and refuses a tampered one.

use std::process::Command;

use tollgate_e2e::{
    each_backend,
    fixtures::{create_org, create_sa, org_name, sa_name},
    peers,
    rpc::RpcResult as _,
    v1::{CreateOAuthClientRequest, IssueTokenRequest, OAuthClient, o_auth_client::ClientType},
};

/// Fetches the JWKS through PyJWT's own client, verifies signature,
/// algorithm, `exp`/`nbf`/`iat`, issuer and audience, checks `typ`, and
/// prints the claims.
const VERIFY: &str = r#"
import json, sys, jwt
jwks_uri, token, issuer, audience, alg = sys.argv[1:6]
header = jwt.get_unverified_header(token)
assert header["typ"] == "at+jwt", header
key = jwt.PyJWKClient(jwks_uri).get_signing_key_from_jwt(token)
claims = jwt.decode(
    token, key, algorithms=[alg], issuer=issuer, audience=audience,
    options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
)
print(json.dumps(claims))
"#;

fn python() -> Option<std::path::PathBuf> {
    let python = peers::venv_tool("PyJWT interoperability", "python3")?;
    let has = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if has {
        Some(python)
    } else {
        peers::skip(
            "PyJWT interoperability",
            "PyJWT[crypto] is not installed in the venv (.venv/bin/pip install 'PyJWT[crypto]')",
        );
        None
    }
}

#[tokio::test]
async fn pyjwt_verifies_our_tokens_for_each_algorithm() {
    let Some(python) = python() else {
        return;
    };
    each_backend(async |server| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_sa(&admin, "acme", "billing", &["viewer"]).await;
        let issuer = server.grpc_url();
        for alg in ["EdDSA", "ES256", "RS256"] {
            let client = admin
                .oauth_clients()
                .create_o_auth_client(CreateOAuthClientRequest {
                    parent: org_name("acme"),
                    oauth_client_id: alg.to_lowercase(),
                    oauth_client: Some(OAuthClient {
                        display_name: alg.into(),
                        client_type: ClientType::Confidential as i32,
                        grant_types: vec!["client_credentials".into()],
                        scopes: vec!["users.get".into()],
                        service_account: sa_name("acme", "billing"),
                        signing_algorithm: alg.into(),
                        ..Default::default()
                    }),
                })
                .await
                .expect_ok();
            let token = server
                .anonymous()
                .tokens()
                .issue_token(IssueTokenRequest {
                    grant_type: "client_credentials".into(),
                    client_id: client.name.clone(),
                    client_secret: client.secret.clone(),
                    ..Default::default()
                })
                .await
                .expect_ok()
                .access_token;
            let run = {
                let (python, issuer) = (python.clone(), issuer.clone());
                move |token: String| {
                    let mut cmd = Command::new(&python);
                    cmd.args([
                        "-c",
                        VERIFY,
                        &format!("{issuer}/oauth2/jwks"),
                        &token,
                        &issuer,
                        &issuer,
                        alg,
                    ]);
                    cmd.output()
                }
            };
            let t = token.clone();
            let r = run.clone();
            let out = tokio::task::spawn_blocking(move || r(t)).await??;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{alg}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let claims: serde_json::Value = serde_json::from_str(stdout.trim())?;
            assert_eq!(claims["sub"], sa_name("acme", "billing"), "{alg}");
            assert_eq!(claims["client_id"], client.name, "{alg}");
            assert_eq!(claims["scope"], "users.get", "{alg}");

            // One flipped character of the payload: PyJWT refuses it.
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
            parts[1].pop();
            parts[1].push(flipped);
            let tampered = parts.join(".");
            let out = tokio::task::spawn_blocking(move || run(tampered)).await??;
            assert!(
                !out.status.success(),
                "{alg}: PyJWT accepted a tampered token"
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("InvalidSignatureError") || stderr.contains("DecodeError"),
                "{alg}: {stderr}"
            );
        }
        Ok(())
    })
    .await;
}
