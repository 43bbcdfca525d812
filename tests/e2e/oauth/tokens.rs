//! The token endpoint and JWT authentication end to end: the `oauth2`
//! crate gets tokens with client_credentials (Basic and body
//! authentication, each signing algorithm), Tollgate accepts them as
//! credentials narrowed by their scopes, refuses every forged or
//! misdirected token, and introspection, revocation and token exchange
//! behave per their RFCs.

use std::time::Duration;

use base64::Engine as _;
use oauth2::{
    AuthType, ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse as _, TokenUrl,
    basic::{BasicClient, BasicErrorResponseType},
};
use tollgate_client::Client;
use tollgate_e2e::{
    Code, TestServer, curl, each_backend,
    fixtures::{create_org, create_sa, org_name, sa_name},
    rpc::RpcResult as _,
    v1::{
        CreateOAuthClientRequest, GetOrganizationRequest, IssueTokenRequest, ListEventsRequest,
        ListServiceAccountsRequest, ListUsersRequest, OAuthClient, RotateSigningKeyRequest,
        ServiceAccount, UpdateServiceAccountRequest, event::After, o_auth_client::ClientType,
        service_account,
    },
};

/// A confidential client of `acme` acting as service account `billing`
/// (an editor), allowed `grants`, signing with `alg`; returns
/// `(client_id, secret)`.
async fn client(
    server: &TestServer,
    id: &str,
    sa: &str,
    grants: &[&str],
    alg: &str,
) -> (String, String) {
    let c = server
        .admin()
        .oauth_clients()
        .create_o_auth_client(CreateOAuthClientRequest {
            parent: org_name("acme"),
            oauth_client_id: id.into(),
            oauth_client: Some(OAuthClient {
                display_name: id.into(),
                client_type: ClientType::Confidential as i32,
                grant_types: grants.iter().map(|g| (*g).to_owned()).collect(),
                scopes: vec!["users.*".into(), "organizations.get".into()],
                audiences: vec!["https://billing.internal".into()],
                service_account: sa_name("acme", sa),
                signing_algorithm: alg.into(),
                ..Default::default()
            }),
        })
        .await
        .expect_ok();
    assert!(c.secret.starts_with("tgcs_"), "{c:?}");
    (c.name, c.secret)
}

async fn world(server: &TestServer) {
    let admin = server.admin();
    create_org(&admin, "acme", "Acme").await;
    create_sa(&admin, "acme", "billing", &["editor"]).await;
}

fn http() -> oauth2::reqwest::Client {
    oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client")
}

fn oauth(
    server: &TestServer,
    id: &str,
    secret: &str,
    auth: AuthType,
) -> BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
> {
    BasicClient::new(ClientId::new(id.into()))
        .set_client_secret(ClientSecret::new(secret.into()))
        .set_auth_type(auth)
        .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", server.grpc_url())).expect("a URL"))
}

fn bearer(server: &TestServer, token: &str) -> Client {
    server
        .builder()
        .bearer_token(token)
        .connect_lazy()
        .expect("a client")
}

/// The JOSE header and claims of a JWT, undecoded by any verifier.
fn parts(jwt: &str) -> (serde_json::Value, serde_json::Value) {
    let mut it = jwt.split('.');
    let mut next = || {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(it.next().expect("a JWT part"))
            .expect("base64url");
        serde_json::from_slice::<serde_json::Value>(&raw).expect("JSON")
    };
    let header = next();
    let claims = next();
    (header, claims)
}

#[tokio::test]
async fn client_credentials_tokens_authenticate_calls_within_their_scopes() {
    each_backend(async |server| {
        world(server).await;
        for (i, alg) in ["EdDSA", "ES256", "RS256"].into_iter().enumerate() {
            let (id, secret) = client(
                server,
                &format!("svc{i}"),
                "billing",
                &["client_credentials"],
                alg,
            )
            .await;
            let auth = if i % 2 == 0 {
                AuthType::BasicAuth
            } else {
                AuthType::RequestBody
            };
            let token = oauth(server, &id, &secret, auth)
                .exchange_client_credentials()
                .add_scope(Scope::new("users.*".into()))
                .request_async(&http())
                .await
                .map_err(|e| anyhow::anyhow!("{alg}: {e:?}"))?;
            let jwt = token.access_token().secret().clone();
            let (header, claims) = parts(&jwt);
            assert_eq!(header["alg"], alg);
            assert_eq!(header["typ"], "at+jwt");
            assert!(header["kid"].is_string());
            assert_eq!(claims["sub"], sa_name("acme", "billing"));
            assert_eq!(claims["client_id"], id);
            assert_eq!(claims["scope"], "users.*");
            assert_eq!(claims["org"], "acme");
            assert_eq!(claims["roles"], serde_json::json!(["editor"]));
            assert_eq!(claims["iss"], server.grpc_url());
            assert_eq!(claims["aud"], server.grpc_url());
            for c in ["exp", "iat", "nbf", "jti"] {
                assert!(!claims[c].is_null(), "{c} missing: {claims}");
            }
            assert!(
                token
                    .expires_in()
                    .is_some_and(|d| d <= Duration::from_secs(900))
            );

            let caller = bearer(server, &jwt);
            caller
                .users()
                .list_users(ListUsersRequest {
                    parent: org_name("acme"),
                    ..Default::default()
                })
                .await
                .expect_ok();
            // The editor role grants it; the token's scope does not.
            let refused = caller
                .service_accounts()
                .list_service_accounts(ListServiceAccountsRequest {
                    parent: org_name("acme"),
                    ..Default::default()
                })
                .await
                .expect_code(Code::PermissionDenied);
            assert!(
                refused.message().contains("serviceAccounts.list"),
                "{}",
                refused.message()
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn the_token_endpoint_refuses_with_the_rfc_codes() {
    each_backend(async |server| {
        world(server).await;
        let (id, secret) = client(server, "svc", "billing", &["client_credentials"], "EdDSA").await;
        let error = |r: Result<_, RequestTokenError<_, oauth2::basic::BasicErrorResponse>>| match r
        {
            Err(RequestTokenError::ServerResponse(e)) => e.error().clone(),
            other => panic!("expected an error response, got {other:?}"),
        };
        // Wrong secret.
        let r = oauth(server, &id, "tgcs_wrong", AuthType::BasicAuth)
            .exchange_client_credentials()
            .request_async(&http())
            .await;
        assert_eq!(error(r), BasicErrorResponseType::InvalidClient);
        // A scope the client may not ask for.
        let r = oauth(server, &id, &secret, AuthType::BasicAuth)
            .exchange_client_credentials()
            .add_scope(Scope::new("apiKeys.create".into()))
            .request_async(&http())
            .await;
        assert_eq!(error(r), BasicErrorResponseType::InvalidScope);
        // An unknown scope.
        let r = oauth(server, &id, &secret, AuthType::BasicAuth)
            .exchange_client_credentials()
            .add_scope(Scope::new("fly".into()))
            .request_async(&http())
            .await;
        assert_eq!(error(r), BasicErrorResponseType::InvalidScope);
        // An audience the client may not ask for.
        let r = oauth(server, &id, &secret, AuthType::BasicAuth)
            .exchange_client_credentials()
            .add_extra_param("audience", "https://evil.example")
            .request_async(&http())
            .await;
        assert_eq!(
            error(r),
            BasicErrorResponseType::Extension("invalid_target".into())
        );

        // Raw requests for what oauth2 will not send.
        let post = async |body: &str| -> anyhow::Result<(u16, serde_json::Value)> {
            let r = curl::request(
                curl::Version::Http1,
                &format!("{}/oauth2/token", server.grpc_url()),
                &[
                    "-X",
                    "POST",
                    "-H",
                    "content-type: application/x-www-form-urlencoded",
                    "--data-binary",
                    body,
                ],
            )
            .await?;
            assert_eq!(r.header("cache-control"), Some("no-store"));
            Ok((r.status, r.json()?))
        };
        let enc = |s: &str| form(s);
        let (status, body) = post(&format!(
            "grant_type=password&username=a&password=b&client_id={}&client_secret={}",
            enc(&id),
            enc(&secret)
        ))
        .await?;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("unsupported_grant_type"))
        );
        let (status, body) = post(&format!(
            "grant_type=authorization_code&code=x&client_id={}&client_secret={}",
            enc(&id),
            enc(&secret)
        ))
        .await?;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("unauthorized_client"))
        );
        let (status, body) = post(&format!(
            "grant_type=client_credentials&client_id={0}&client_id={0}&client_secret={1}",
            enc(&id),
            enc(&secret)
        ))
        .await?;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request"))
        );
        let (status, body) = post("grant_type=client_credentials").await?;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );

        // A disabled client is refused like an unknown one.
        let admin = server.admin();
        admin
            .oauth_clients()
            .update_o_auth_client(tollgate_e2e::v1::UpdateOAuthClientRequest {
                oauth_client: Some(OAuthClient {
                    name: id.clone(),
                    state: tollgate_e2e::v1::o_auth_client::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: tollgate_e2e::fixtures::mask(&["state"]),
            })
            .await
            .expect_ok();
        let r = oauth(server, &id, &secret, AuthType::BasicAuth)
            .exchange_client_credentials()
            .request_async(&http())
            .await;
        assert_eq!(error(r), BasicErrorResponseType::InvalidClient);

        // Over gRPC, the RFC code is the ErrorInfo reason.
        let s = server
            .anonymous()
            .tokens()
            .issue_token(IssueTokenRequest {
                grant_type: "client_credentials".into(),
                client_id: id.clone(),
                client_secret: secret.clone(),
                ..Default::default()
            })
            .await
            .expect_code(Code::Unauthenticated);
        let info = tonic_types::StatusExt::get_details_error_info(&s).expect("ErrorInfo");
        assert_eq!(info.reason, "invalid_client");
        Ok(())
    })
    .await;
}

/// `application/x-www-form-urlencoded` of one value.
fn form(s: &str) -> String {
    url_encode(s)
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Signs `claims` with the server's active key of `alg`, for tokens the
/// endpoint would never issue.
fn forge(server: &TestServer, alg: &str, typ: &str, claims: &serde_json::Value) -> String {
    let alg = tollgate_server::oauth::keys::Algorithm::parse(alg).expect("an algorithm");
    server.keys().sign(alg, typ, claims).expect("signed")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::test]
async fn forged_and_misdirected_tokens_are_refused() {
    each_backend(async |server| {
        world(server).await;
        let (id, secret) = client(server, "svc", "billing", &["client_credentials"], "EdDSA").await;
        let good = oauth(server, &id, &secret, AuthType::BasicAuth)
            .exchange_client_credentials()
            .request_async(&http())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .access_token()
            .secret()
            .clone();
        let get = GetOrganizationRequest {
            name: org_name("acme"),
        };
        bearer(server, &good)
            .organizations()
            .get_organization(get.clone())
            .await
            .expect_ok();
        let (header, claims) = parts(&good);
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let sig = good.rsplit('.').next().unwrap_or_default().to_owned();

        let mut cases: Vec<(&str, String)> = Vec::new();
        // Tampered payload under the original signature.
        let mut more = claims.clone();
        more["roles"] = serde_json::json!(["admin"]);
        cases.push(("tampered", format!("{}.{}.{sig}", b64(&header), b64(&more))));
        // alg: none.
        let mut none = header.clone();
        none["alg"] = "none".into();
        cases.push(("alg none", format!("{}.{}.", b64(&none), b64(&claims))));
        // HS256 keyed with the public key's bytes.
        let mut hs = header.clone();
        hs["alg"] = "HS256".into();
        let jwks: serde_json::Value = serde_json::from_slice(&server.keys().jwks())?;
        let public = jwks["keys"]
            .as_array()
            .and_then(|k| k.iter().find(|k| k["kid"] == header["kid"]))
            .map(|k| k.to_string())
            .unwrap_or_default();
        let signing_input = format!("{}.{}", b64(&hs), b64(&claims));
        let mac = hmac_sha256(public.as_bytes(), signing_input.as_bytes());
        cases.push((
            "HS256 with the public key",
            format!(
                "{signing_input}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
            ),
        ));
        // Unknown kid.
        let mut unknown = header.clone();
        unknown["kid"] = "nope".into();
        cases.push((
            "unknown kid",
            format!("{}.{}.{sig}", b64(&unknown), b64(&claims)),
        ));
        // Signed by the server's key, but wrong in one claim each.
        let t = now();
        let with = |k: &str, v: serde_json::Value| {
            let mut c = claims.clone();
            c[k] = v;
            c
        };
        cases.push((
            "expired",
            forge(server, "EdDSA", "at+jwt", &with("exp", (t - 600).into())),
        ));
        cases.push((
            "not yet valid",
            forge(server, "EdDSA", "at+jwt", &with("nbf", (t + 600).into())),
        ));
        cases.push((
            "wrong audience",
            forge(
                server,
                "EdDSA",
                "at+jwt",
                &with("aud", "https://billing.internal".into()),
            ),
        ));
        cases.push((
            "wrong issuer",
            forge(
                server,
                "EdDSA",
                "at+jwt",
                &with("iss", "https://evil.example".into()),
            ),
        ));
        cases.push((
            "wrong typ (an ID token)",
            forge(server, "EdDSA", "JWT", &claims),
        ));
        for (what, token) in cases {
            let s = bearer(server, &token)
                .organizations()
                .get_organization(get.clone())
                .await
                .expect_code(Code::Unauthenticated);
            let why = match what {
                "tampered" => "signature",
                "alg none" | "HS256 with the public key" => "algorithm",
                "unknown kid" => "unknown token signing key",
                "expired" => "expired",
                "not yet valid" => "not yet valid",
                "wrong audience" => "audience",
                "wrong issuer" => "issuer",
                _ => "type",
            };
            assert!(s.message().contains(why), "{what}: {}", s.message());
        }
        // The good token still works: nothing above poisoned the cache.
        bearer(server, &good)
            .organizations()
            .get_organization(get)
            .await
            .expect_ok();
        Ok(())
    })
    .await;
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let ih = sha2::Sha256::new()
        .chain_update(&inner)
        .chain_update(data)
        .finalize();
    sha2::Sha256::new()
        .chain_update(&outer)
        .chain_update(ih)
        .finalize()
        .to_vec()
}

#[tokio::test]
async fn revocation_disabling_and_introspection() {
    each_backend(async |server| {
        world(server).await;
        let (id, secret) = client(server, "svc", "billing", &["client_credentials"], "ES256").await;
        let issue = async || -> anyhow::Result<String> {
            Ok(oauth(server, &id, &secret, AuthType::BasicAuth)
                .exchange_client_credentials()
                .request_async(&http())
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .access_token()
                .secret()
                .clone())
        };
        let get = GetOrganizationRequest {
            name: org_name("acme"),
        };
        let form_post = async |path: &str, args: &[&str]| -> anyhow::Result<curl::Response> {
            let mut all = vec![
                "-X",
                "POST",
                "-H",
                "content-type: application/x-www-form-urlencoded",
            ];
            all.extend_from_slice(args);
            curl::request(
                curl::Version::Http1,
                &format!("{}{path}", server.grpc_url()),
                &all,
            )
            .await
        };
        let basic = format!("{}:{}", url_encode(&id), url_encode(&secret));

        // Introspection: by the client itself, and with an API key.
        let token = issue().await?;
        let r = form_post(
            "/oauth2/introspect",
            &["-u", &basic, "--data-binary", &format!("token={token}")],
        )
        .await?;
        let body = r.json()?;
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(body["active"], true, "{body}");
        assert_eq!(body["sub"], sa_name("acme", "billing"));
        assert_eq!(body["client_id"], id);
        assert_eq!(body["token_type"], "Bearer");
        let admin_bearer = format!("authorization: Bearer {}", server.admin_key());
        let r = form_post(
            "/oauth2/introspect",
            &[
                "-H",
                &admin_bearer,
                "--data-binary",
                &format!("token={token}"),
            ],
        )
        .await?;
        assert_eq!(r.json()?["active"], true);
        // Unauthenticated introspection is refused.
        let r = form_post(
            "/oauth2/introspect",
            &["--data-binary", &format!("token={token}")],
        )
        .await?;
        assert_eq!(r.status, 401);
        // Garbage is simply inactive.
        let r = form_post(
            "/oauth2/introspect",
            &["-u", &basic, "--data-binary", "token=garbage"],
        )
        .await?;
        assert_eq!(r.json()?, serde_json::json!({"active": false}));

        // Revocation: the cached token stops working at once.
        let caller = bearer(server, &token);
        caller
            .organizations()
            .get_organization(get.clone())
            .await
            .expect_ok();
        let r = form_post(
            "/oauth2/revoke",
            &[
                "-u",
                &basic,
                "-H",
                "x-request-id: revoke-1",
                "--data-binary",
                &format!("token={token}"),
            ],
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.text());
        // One `token.revoked` event, naming the client, never the token.
        let revoked_events = async || {
            server
                .admin()
                .events()
                .list_events(ListEventsRequest {
                    parent: org_name("acme"),
                    filter: "type = \"token.revoked\"".into(),
                    ..Default::default()
                })
                .await
                .expect_ok()
                .events
        };
        let events = revoked_events().await;
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e.resource, id);
        assert_eq!(e.actor, id, "the client revoked it");
        assert_eq!(e.request_id, "revoke-1");
        let Some(After::RevokedToken(t)) = &e.after else {
            panic!("{e:?}");
        };
        assert_eq!(t.token_type, "access_token");
        assert_eq!(t.reason, "revoked");
        assert_eq!(t.client, id);
        assert_eq!(t.subject, sa_name("acme", "billing"));
        assert!(!t.jti.is_empty() && t.expire_time.is_some(), "{t:?}");
        assert!(!format!("{e:?}").contains(&token), "no token in an event");
        let s = caller
            .organizations()
            .get_organization(get.clone())
            .await
            .expect_code(Code::Unauthenticated);
        assert!(s.message().contains("revoked"), "{}", s.message());
        let r = form_post(
            "/oauth2/introspect",
            &["-u", &basic, "--data-binary", &format!("token={token}")],
        )
        .await?;
        assert_eq!(r.json()?, serde_json::json!({"active": false}));
        // Revoking again, or garbage, still succeeds (RFC 7009 2.2), and
        // changes nothing: no second event.
        for again in [token.as_str(), "garbage"] {
            let r = form_post(
                "/oauth2/revoke",
                &["-u", &basic, "--data-binary", &format!("token={again}")],
            )
            .await?;
            assert_eq!(r.status, 200);
        }
        assert_eq!(revoked_events().await.len(), 1);

        // Disabling the principal stops its cached tokens.
        let token = issue().await?;
        let caller = bearer(server, &token);
        caller
            .organizations()
            .get_organization(get.clone())
            .await
            .expect_ok();
        server
            .admin()
            .service_accounts()
            .update_service_account(UpdateServiceAccountRequest {
                service_account: Some(ServiceAccount {
                    name: sa_name("acme", "billing"),
                    state: service_account::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: tollgate_e2e::fixtures::mask(&["state"]),
            })
            .await
            .expect_ok();
        caller
            .organizations()
            .get_organization(get)
            .await
            .expect_code(Code::Unauthenticated);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn token_exchange_acts_for_the_subject() {
    each_backend(async |server| {
        world(server).await;
        let admin = server.admin();
        create_sa(&admin, "acme", "gateway", &["viewer"]).await;
        // The front service gets a token of its own; the backend exchanges
        // it for one that acts for the front service's principal.
        let (front, front_secret) =
            client(server, "front", "billing", &["client_credentials"], "EdDSA").await;
        let (back, back_secret) = client(
            server,
            "back",
            "gateway",
            &["urn:ietf:params:oauth:grant-type:token-exchange"],
            "ES256",
        )
        .await;
        let subject = oauth(server, &front, &front_secret, AuthType::BasicAuth)
            .exchange_client_credentials()
            .request_async(&http())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .access_token()
            .secret()
            .clone();
        let reply = server
            .anonymous()
            .tokens()
            .issue_token(IssueTokenRequest {
                grant_type: "urn:ietf:params:oauth:grant-type:token-exchange".into(),
                client_id: back.clone(),
                client_secret: back_secret.clone(),
                subject_token: subject.clone(),
                subject_token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
                scope: "users.*".into(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert_eq!(
            reply.issued_token_type,
            "urn:ietf:params:oauth:token-type:access_token"
        );
        let (_, claims) = parts(&reply.access_token);
        assert_eq!(claims["sub"], sa_name("acme", "billing"));
        assert_eq!(claims["act"]["sub"], sa_name("acme", "gateway"));
        assert_eq!(claims["act"]["client_id"], back);
        assert_eq!(claims["client_id"], back);
        bearer(server, &reply.access_token)
            .users()
            .list_users(ListUsersRequest {
                parent: org_name("acme"),
                ..Default::default()
            })
            .await
            .expect_ok();
        // A scope the subject never had is refused.
        let s = server
            .anonymous()
            .tokens()
            .issue_token(IssueTokenRequest {
                grant_type: "urn:ietf:params:oauth:grant-type:token-exchange".into(),
                client_id: back.clone(),
                client_secret: back_secret.clone(),
                subject_token: subject.clone(),
                subject_token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
                scope: "apiKeys.get".into(),
                ..Default::default()
            })
            .await
            .expect_code(Code::InvalidArgument);
        assert_eq!(
            tonic_types::StatusExt::get_details_error_info(&s).map(|i| i.reason),
            Some("invalid_scope".to_owned())
        );
        // A garbage subject token is invalid_grant.
        let s = server
            .anonymous()
            .tokens()
            .issue_token(IssueTokenRequest {
                grant_type: "urn:ietf:params:oauth:grant-type:token-exchange".into(),
                client_id: back,
                client_secret: back_secret,
                subject_token: "a.b.c".into(),
                subject_token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
                ..Default::default()
            })
            .await
            .expect_code(Code::InvalidArgument);
        assert_eq!(
            tonic_types::StatusExt::get_details_error_info(&s).map(|i| i.reason),
            Some("invalid_grant".to_owned())
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn discovery_jwks_and_rotation() {
    each_backend(async |server| {
        world(server).await;
        let issuer = server.grpc_url();
        let r = curl::request(
            curl::Version::Http1,
            &format!("{issuer}/.well-known/openid-configuration"),
            &[],
        )
        .await?;
        let doc = r.json()?;
        assert_eq!(doc["issuer"], issuer);
        assert_eq!(doc["token_endpoint"], format!("{issuer}/oauth2/token"));
        assert_eq!(
            doc["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        let same = curl::request(
            curl::Version::Http1,
            &format!("{issuer}/.well-known/oauth-authorization-server"),
            &[],
        )
        .await?
        .json()?;
        assert_eq!(same, doc);
        let jwks_url = doc["jwks_uri"].as_str().unwrap_or_default().to_owned();
        let r = curl::request(curl::Version::Http1, &jwks_url, &[]).await?;
        assert!(
            r.header("cache-control")
                .is_some_and(|c| c.contains("max-age")),
            "{:?}",
            r.headers
        );
        let jwks = r.json()?;
        let kids_before: Vec<String> = jwks["keys"]
            .as_array()
            .map(|k| {
                k.iter()
                    .map(|k| k["kid"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        for k in jwks["keys"].as_array().into_iter().flatten() {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(k.get(private).is_none(), "private member {private} in {k}");
            }
        }

        let (id, secret) = client(server, "svc", "billing", &["client_credentials"], "EdDSA").await;
        let issue = async || -> anyhow::Result<String> {
            Ok(oauth(server, &id, &secret, AuthType::BasicAuth)
                .exchange_client_credentials()
                .request_async(&http())
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .access_token()
                .secret()
                .clone())
        };
        let old = issue().await?;
        let before = tollgate_e2e::outbox::last_id(server.database_url()).await;
        let rotated = server
            .admin()
            .tokens()
            .rotate_signing_key(RotateSigningKeyRequest {
                algorithm: "EdDSA".into(),
                immediate: true,
            })
            .await
            .expect_ok();
        let new_kid = rotated.name.trim_start_matches("signingKeys/").to_owned();
        // Two events, by the platform admin who rotated: the key it
        // replaces, then the new key.
        let events = tollgate_e2e::outbox::rows_after(server.database_url(), before).await;
        let types: Vec<&str> = events.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(
            types,
            ["signingKey.replaced", "signingKey.created"],
            "{events:#?}"
        );
        assert_eq!(events[1].event.resource, rotated.name);
        for e in &events {
            assert_eq!(e.actor, "organizations/root/serviceAccounts/admin");
            assert_eq!(e.event.organization, "organizations/root");
        }
        assert!(!kids_before.contains(&new_kid));
        let jwks = curl::request(curl::Version::Http1, &jwks_url, &[])
            .await?
            .json()?;
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .map(|k| k.iter().filter_map(|k| k["kid"].as_str()).collect())
            .unwrap_or_default();
        assert!(kids.contains(&new_kid.as_str()), "{kids:?}");
        let (old_header, _) = parts(&old);
        assert!(kids.contains(&old_header["kid"].as_str().unwrap_or("")));
        let new = issue().await?;
        assert_eq!(parts(&new).0["kid"], new_kid.as_str());
        let get = GetOrganizationRequest {
            name: org_name("acme"),
        };
        for token in [&old, &new] {
            bearer(server, token)
                .organizations()
                .get_organization(get.clone())
                .await
                .expect_ok();
        }
        // Only platform admins rotate.
        let (_, other) = (
            0,
            tollgate_e2e::fixtures::sa_with_key(&server.admin(), "acme", "boss", &["admin"]).await,
        );
        server
            .client(&other)
            .tokens()
            .rotate_signing_key(RotateSigningKeyRequest {
                algorithm: "EdDSA".into(),
                immediate: false,
            })
            .await
            .expect_code(Code::PermissionDenied);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn failed_client_authentications_are_throttled() {
    const MAX: u32 = 3;
    const WINDOW: Duration = Duration::from_secs(2);
    for backend in tollgate_e2e::backends() {
        let mut server = TestServer::start_configured(&backend, |c| {
            c.throttle_max_failures = MAX;
            c.throttle_window = WINDOW;
        })
        .await
        .expect("a server");
        world(&server).await;
        let (id, secret) =
            client(&server, "svc", "billing", &["client_credentials"], "EdDSA").await;
        let attempt = async |secret: &str| {
            oauth(&server, &id, secret, AuthType::BasicAuth)
                .exchange_client_credentials()
                .request_async(&http())
                .await
        };
        for _ in 0..MAX {
            match attempt("tgcs_wrong").await {
                Err(RequestTokenError::ServerResponse(e)) => {
                    assert_eq!(*e.error(), BasicErrorResponseType::InvalidClient)
                }
                other => panic!("[{backend}] expected invalid_client, got {other:?}"),
            }
        }
        // Locked out: even the right secret is refused until the window ends.
        match attempt(&secret).await {
            Err(RequestTokenError::ServerResponse(e)) => assert_eq!(
                *e.error(),
                BasicErrorResponseType::Extension("slow_down".into()),
                "[{backend}]"
            ),
            other => panic!("[{backend}] expected slow_down, got {other:?}"),
        }
        tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
        attempt(&secret)
            .await
            .unwrap_or_else(|e| panic!("[{backend}] after the window: {e:?}"));
        server.stop().await.expect("a clean stop");
    }
}

#[tokio::test]
async fn deleting_a_service_account_disables_its_clients() {
    each_backend(async |server| {
        world(server).await;
        let (id, secret) = client(server, "svc", "billing", &["client_credentials"], "EdDSA").await;
        let attempt = async || {
            oauth(server, &id, &secret, AuthType::BasicAuth)
                .exchange_client_credentials()
                .request_async(&http())
                .await
        };
        attempt().await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let admin = server.admin();
        admin
            .service_accounts()
            .delete_service_account(tollgate_e2e::v1::DeleteServiceAccountRequest {
                name: sa_name("acme", "billing"),
                etag: String::new(),
            })
            .await
            .expect_ok();
        let got = admin
            .oauth_clients()
            .get_o_auth_client(tollgate_e2e::v1::GetOAuthClientRequest { name: id.clone() })
            .await
            .expect_ok();
        assert_eq!(
            got.state,
            tollgate_e2e::v1::o_auth_client::State::Disabled as i32
        );
        // A service account re-created under the same name, now an admin,
        // does not hand the old client its power.
        create_sa(&admin, "acme", "billing", &["admin"]).await;
        match attempt().await {
            Err(RequestTokenError::ServerResponse(e)) => {
                assert_eq!(*e.error(), BasicErrorResponseType::InvalidClient)
            }
            other => panic!("expected invalid_client, got {other:?}"),
        }
        Ok(())
    })
    .await;
}
