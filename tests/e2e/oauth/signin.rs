//! The authorization code flow with PKCE, driven by an independent
//! relying party (the `openidconnect` crate: discovery, authorization URL,
//! code exchange, ID token verification, userinfo, refresh) while the test
//! plays the user over HTTP against the sign-in and consent pages; then
//! every refusal the RFCs name, and the brute-force lockout.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use openidconnect::{
    AccessTokenHash, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse as _,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse as _,
    core::{
        CoreClient, CoreErrorResponseType, CoreJwsSigningAlgorithm, CoreProviderMetadata,
        CoreResponseType, CoreTokenResponse, CoreUserInfoClaims,
    },
    reqwest,
};
use tollgate_e2e::{
    TestServer, backends,
    rpc::RpcResult as _,
    v1::{DeleteUserRequest, GetOrganizationRequest},
};

use super::web::{Browser, PASSWORD, Page, REDIRECT_URI, code_client, org_and_user};

/// The relying party as `from_provider_metadata` builds it.
type Rp = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        // The relying party must not follow redirects (SSRF).
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Discovery from `{issuer}/.well-known/openid-configuration`, and the
/// relying party of `client_id`.
async fn relying_party(issuer: &str, client_id: &str, secret: Option<&str>) -> Rp {
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.into()).unwrap(), &http())
            .await
            .expect("OIDC discovery");
    assert_eq!(metadata.issuer().as_str(), issuer);
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client_id.into()),
        secret.map(|s| ClientSecret::new(s.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap())
}

/// An authorization request of `rp` with PKCE S256, a nonce and a state.
struct Request {
    url: String,
    state: CsrfToken,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
}

fn request(rp: &Rp) -> Request {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = rp
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("offline_access".into()))
        .add_scope(Scope::new("organizations.get".into()))
        .set_pkce_challenge(challenge)
        .url();
    Request {
        url: url.to_string(),
        state,
        nonce,
        verifier,
    }
}

/// Signs in (unless a session already shows consent), allows, and
/// returns the redirect's query after checking `state` and `iss`.
async fn sign_in_and_allow(
    browser: &Browser,
    issuer: &str,
    req: &Request,
) -> BTreeMap<String, String> {
    let mut page = browser.get(&req.url).await;
    assert_eq!(page.status, 200, "{page:?}");
    if page.body.contains("name=\"password\"") {
        page = browser.sign_in(&page, "ed@example.com", PASSWORD).await;
    }
    assert_eq!(page.status, 200, "{page:?}");
    let done = browser.decide(&page, "allow").await;
    assert!(
        done.header("location")
            .starts_with(&format!("{REDIRECT_URI}?")),
        "{done:?}"
    );
    let q = done.redirect_query();
    assert_eq!(
        q.get("state"),
        Some(req.state.secret()),
        "state round-trips"
    );
    assert_eq!(
        q.get("iss").map(String::as_str),
        Some(issuer),
        "RFC 9207 iss"
    );
    assert!(!q.contains_key("error"), "{q:?}");
    q
}

async fn exchange(rp: &Rp, code: &str, verifier: PkceCodeVerifier) -> CoreTokenResponse {
    rp.exchange_code(AuthorizationCode::new(code.into()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .expect("code exchange")
}

/// The RFC error code of a refused token request.
fn token_error<E: std::error::Error>(
    r: Result<
        CoreTokenResponse,
        RequestTokenError<E, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
    >,
) -> CoreErrorResponseType {
    match r {
        Err(RequestTokenError::ServerResponse(e)) => e.error().clone(),
        other => panic!("expected an RFC error response, got {other:?}"),
    }
}

fn assert_security_headers(page: &Page) {
    let csp = page.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert_eq!(page.header("cache-control"), "no-store");
}

fn set_cookie<'a>(page: &'a Page, name: &str) -> &'a str {
    page.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set: {page:?}"))
}

/// A hand-made authorization URL (for requests the relying party would
/// not make).
fn authorize_url(issuer: &str, params: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    format!("{issuer}/oauth2/authorize?{}", q.finish())
}

/// A parameter to set (`Some`) or drop (`None`) in a hand-made request.
type Change = (&'static str, Option<&'static str>);

const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

#[tokio::test]
async fn code_flow_with_an_independent_relying_party() {
    tollgate_e2e::each_backend(async |server| {
        let issuer = server.grpc_url();
        let admin = org_and_user(server, "acme", "ed").await;
        let client = code_client(&admin, "acme", "web", true, &[REDIRECT_URI], "EdDSA").await;
        let rp = relying_party(&issuer, &client.name, None).await;
        let browser = Browser::new(&issuer);

        // The sign-in page: secure headers, cookies, escaped names.
        let req = request(&rp);
        let signin = browser.get(&req.url).await;
        assert_eq!(signin.status, 200, "{signin:?}");
        assert_security_headers(&signin);
        assert!(
            signin.body.contains("App &lt;web&gt;"),
            "escaped: {}",
            signin.body
        );
        assert!(!signin.body.contains("App <web>"));
        let csrf = set_cookie(&signin, "tg_csrf");
        assert!(
            csrf.contains("HttpOnly") && csrf.contains("SameSite=Lax"),
            "{csrf}"
        );
        assert!(
            csrf.contains("Path=/oauth2/") && !csrf.contains("Secure"),
            "{csrf}"
        );

        // Sign in: the session cookie, then consent listing the scopes.
        let consent = browser.sign_in(&signin, "ed@example.com", PASSWORD).await;
        assert_eq!(consent.status, 200, "{consent:?}");
        assert_security_headers(&consent);
        let session = set_cookie(&consent, "tg_session");
        assert!(
            session.contains("HttpOnly") && session.contains("SameSite=Lax"),
            "{session}"
        );
        assert!(session.contains("Path=/oauth2/") && session.contains("Max-Age=28800"));
        // Browsers apply form-action to the 303 after Allow: the client's
        // origin, and no other, is allowed.
        assert!(
            consent
                .header("content-security-policy")
                .contains("form-action 'self' https://app.example;"),
            "{consent:?}"
        );
        assert!(
            consent.body.contains("organizations.get"),
            "{}",
            consent.body
        );
        assert!(consent.body.contains("ed@example.com"));

        // Allow: a 303 back with code, state and iss.
        let done = browser.decide(&consent, "allow").await;
        assert_security_headers(&done);
        let q = done.redirect_query();
        assert_eq!(q.get("state"), Some(req.state.secret()));
        assert_eq!(q.get("iss"), Some(&issuer));
        let code = &q["code"];

        // The relying party exchanges the code with its PKCE verifier.
        let tokens = exchange(&rp, code, req.verifier).await;
        let access = tokens.access_token().clone();
        let refresh = tokens.refresh_token().expect("a refresh token").clone();

        // The ID token: signature, iss, aud, exp, nonce, and at_hash.
        let verifier = rp
            .id_token_verifier()
            .set_allowed_algs(vec![CoreJwsSigningAlgorithm::EdDsa]);
        let id_token = tokens.id_token().expect("an ID token");
        let claims = id_token
            .claims(&verifier, &req.nonce)
            .expect("ID token verifies");
        assert_eq!(claims.subject().as_str(), "organizations/acme/users/ed");
        assert!(claims.auth_time().is_some());
        let at_hash = AccessTokenHash::from_token(
            &access,
            id_token.signing_alg().unwrap(),
            id_token.signing_key(&verifier).unwrap(),
        )
        .unwrap();
        assert_eq!(claims.access_token_hash(), Some(&at_hash));
        // Another nonce is refused.
        assert!(
            id_token
                .claims(&verifier, &Nonce::new("other".into()))
                .is_err()
        );

        // userinfo with the access token.
        let info: CoreUserInfoClaims = rp
            .user_info(access.clone(), Some(claims.subject().clone()))
            .unwrap()
            .request_async(&http())
            .await
            .expect("userinfo");
        assert_eq!(info.email().map(|e| e.as_str()), Some("ed@example.com"));

        // The access token is a credential for Tollgate's own API.
        let caller = server
            .builder()
            .bearer_token(access.secret().clone())
            .connect_lazy()
            .unwrap();
        let org = caller
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: "organizations/acme".into(),
            })
            .await
            .expect_ok();
        assert_eq!(org.name, "organizations/acme");

        // Refresh: new tokens, a refreshed ID token without a nonce.
        let refreshed = rp
            .exchange_refresh_token(&refresh)
            .unwrap()
            .request_async(&http())
            .await
            .expect("refresh");
        assert_ne!(refreshed.access_token().secret(), access.secret());
        let next = refreshed.refresh_token().expect("a rotated refresh token");
        assert_ne!(next.secret(), refresh.secret());
        let again = refreshed
            .id_token()
            .expect("a refreshed ID token")
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .expect("the refreshed ID token verifies");
        assert_eq!(again.subject(), claims.subject());
        assert_eq!(
            again.auth_time(),
            claims.auth_time(),
            "the original sign-in"
        );

        // The used refresh token presented again: refused, and its whole
        // family is revoked, the token it was exchanged for included.
        let reused = rp
            .exchange_refresh_token(&refresh)
            .unwrap()
            .request_async(&http())
            .await;
        assert!(
            matches!(&reused, Err(openidconnect::RequestTokenError::ServerResponse(e))
                if e.error().to_string() == "invalid_grant"),
            "{reused:?}"
        );
        let successor = rp
            .exchange_refresh_token(next)
            .unwrap()
            .request_async(&http())
            .await;
        assert!(
            matches!(&successor, Err(openidconnect::RequestTokenError::ServerResponse(e))
                if e.error().to_string() == "invalid_grant"),
            "the successor dies with its family: {successor:?}"
        );
        // The family's revocation is an event, once.
        let events = server
            .admin()
            .events()
            .list_events(tollgate_e2e::v1::ListEventsRequest {
                parent: tollgate_e2e::fixtures::org_name("acme"),
                filter: "type = \"token.revoked\"".into(),
                ..Default::default()
            })
            .await
            .expect_ok()
            .events;
        assert_eq!(events.len(), 1, "{events:?}");
        match &events[0].after {
            Some(tollgate_e2e::v1::event::After::RevokedToken(t)) => {
                assert_eq!(t.token_type, "refresh_token");
                assert_eq!(t.reason, "reused");
                assert!(!t.family.is_empty());
                assert_eq!(t.subject, claims.subject().as_str());
                assert_eq!(events[0].actor, t.client, "the client presented it");
            }
            other => panic!("{other:?}"),
        }

        // With the session, the next authorization goes straight to consent.
        let req2 = request(&rp);
        let page = browser.get(&req2.url).await;
        assert!(page.body.contains("name=\"decision\""), "consent: {page:?}");
        let q2 = sign_in_and_allow(&browser, &issuer, &req2).await;
        exchange(&rp, &q2["code"], req2.verifier).await;

        // prompt=login asks again; prompt=none with a session needs consent.
        let forced = browser
            .get(&format!("{}&prompt=login", request(&rp).url))
            .await;
        assert!(forced.body.contains("name=\"password\""), "{forced:?}");
        let silent = request(&rp);
        let none = browser.get(&format!("{}&prompt=none", silent.url)).await;
        let q = none.redirect_query();
        assert_eq!(q["error"], "consent_required");
        assert_eq!(q.get("state"), Some(silent.state.secret()));

        // A deleted user's session stops working.
        admin
            .users()
            .delete_user(DeleteUserRequest {
                name: "organizations/acme/users/ed".into(),
                ..Default::default()
            })
            .await
            .expect_ok();
        let after = browser.get(&request(&rp).url).await;
        assert!(after.body.contains("name=\"password\""), "{after:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_confidential_client_signing_es256() {
    tollgate_e2e::each_backend(async |server| {
        let issuer = server.grpc_url();
        let admin = org_and_user(server, "acme", "ed").await;
        let client = code_client(&admin, "acme", "srv", false, &[REDIRECT_URI], "ES256").await;
        let rp = relying_party(&issuer, &client.name, Some(&client.secret)).await;
        let req = request(&rp);
        let q = sign_in_and_allow(&Browser::new(&issuer), &issuer, &req).await;
        let tokens = exchange(&rp, &q["code"], req.verifier).await;
        let verifier = rp
            .id_token_verifier()
            .set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
        let id_token = tokens.id_token().unwrap();
        let claims = id_token
            .claims(&verifier, &req.nonce)
            .expect("ES256 ID token");
        let at_hash = AccessTokenHash::from_token(
            tokens.access_token(),
            id_token.signing_alg().unwrap(),
            id_token.signing_key(&verifier).unwrap(),
        )
        .unwrap();
        assert_eq!(claims.access_token_hash(), Some(&at_hash));
        // The wrong secret is refused at the token endpoint.
        let bad = relying_party(&issuer, &client.name, Some("tgcs_wrong")).await;
        let req = request(&rp);
        let q = sign_in_and_allow(&Browser::new(&issuer), &issuer, &req).await;
        let refused = bad
            .exchange_code(AuthorizationCode::new(q["code"].clone()))
            .unwrap()
            .set_pkce_verifier(req.verifier)
            .request_async(&http())
            .await;
        assert_eq!(token_error(refused), CoreErrorResponseType::InvalidClient);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn refusals_carry_the_rfc_errors() {
    tollgate_e2e::each_backend(async |server| {
        let issuer = server.grpc_url();
        let admin = org_and_user(server, "acme", "ed").await;
        let client = code_client(&admin, "acme", "web", true, &[REDIRECT_URI], "EdDSA").await;
        let cid = client.name.as_str();
        let rp = relying_party(&issuer, cid, None).await;
        let browser = Browser::new(&issuer);
        let base = [
            ("client_id", cid),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT_URI),
            ("state", "st8"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        let with = |changes: &[Change]| {
            let mut params: Vec<(&str, &str)> = base.to_vec();
            for (k, v) in changes {
                params.retain(|(n, _)| n != k);
                if let Some(v) = v {
                    params.push((k, v));
                }
            }
            authorize_url(&issuer, &params)
        };

        // Redirect URI and client problems: a page, never a redirect.
        for url in [
            with(&[("redirect_uri", Some("https://evil.example/cb"))]),
            with(&[("redirect_uri", Some("https://app.example/cb/"))]),
            with(&[("client_id", Some("organizations/acme/clients/nope"))]),
            with(&[("client_id", None)]),
        ] {
            let page = browser.get(&url).await;
            assert_eq!(page.status, 400, "{url}: {page:?}");
            assert!(
                page.header("location").is_empty(),
                "never redirected: {page:?}"
            );
            assert_security_headers(&page);
        }
        // The only registered URI may be left out.
        let page = browser.get(&with(&[("redirect_uri", None)])).await;
        assert_eq!(page.status, 200, "{page:?}");

        // Everything else: back to the client with the RFC's code.
        let cases: [(&[Change], &str); 7] = [
            (
                &[("code_challenge", None), ("code_challenge_method", None)],
                "invalid_request",
            ),
            (
                &[("code_challenge_method", Some("plain"))],
                "invalid_request",
            ),
            (
                &[("response_type", Some("token"))],
                "unsupported_response_type",
            ),
            (&[("scope", Some("openid users.delete"))], "invalid_scope"),
            (&[("scope", Some("openid nonsense"))], "invalid_scope"),
            (
                &[("audience", Some("https://elsewhere.example"))],
                "invalid_target",
            ),
            (&[("prompt", Some("none"))], "login_required"),
        ];
        for (changes, want) in cases {
            let page = browser.get(&with(changes)).await;
            let q = page.redirect_query();
            assert_eq!(
                q.get("error").map(String::as_str),
                Some(want),
                "{changes:?}: {q:?}"
            );
            assert!(q.contains_key("error_description"));
            assert_eq!(q["state"], "st8");
            assert_eq!(q["iss"], issuer);
            assert!(page.header("location").starts_with(REDIRECT_URI));
        }

        // A wrong password and an unknown email: the same page, same error.
        let signin = browser.get(&with(&[])).await;
        let wrong = browser
            .sign_in(&signin, "ed@example.com", "not the password")
            .await;
        let unknown = browser
            .sign_in(&signin, "nobody@example.com", PASSWORD)
            .await;
        for page in [&wrong, &unknown] {
            assert_eq!(page.status, 200, "{page:?}");
            assert!(
                page.body.contains("The email or password is incorrect."),
                "{}",
                page.body
            );
            assert!(page.body.contains("name=\"password\""));
            assert!(page.header("set-cookie").is_empty(), "no session: {page:?}");
        }

        // CSRF: a missing, a wrong token, or no CSRF cookie is refused.
        let mut fields = signin.hidden();
        fields.retain(|(k, _)| k != "csrf");
        fields.push(("email".into(), "ed@example.com".into()));
        fields.push(("password".into(), PASSWORD.into()));
        assert_eq!(browser.post(&fields).await.status, 400, "no token");
        let mut forged = fields.clone();
        forged.push((
            "csrf".into(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        ));
        assert_eq!(browser.post(&forged).await.status, 400, "forged token");
        let jar = browser.cookie("tg_csrf").unwrap();
        let mut good = signin.hidden();
        good.push(("email".into(), "ed@example.com".into()));
        good.push(("password".into(), PASSWORD.into()));
        browser.clear_cookies();
        assert_eq!(browser.post(&good).await.status, 400, "no CSRF cookie");
        browser.set_cookie("tg_csrf", "another-browsers-cookie-value-xyz");
        assert_eq!(
            browser.post(&good).await.status,
            400,
            "another browser's cookie"
        );
        browser.set_cookie("tg_csrf", &jar);
        // A tampered pending request does not verify.
        let mut tampered = good.clone();
        for (k, v) in &mut tampered {
            if k == "request" {
                v.insert(0, 'x');
            }
        }
        assert_eq!(
            browser.post(&tampered).await.status,
            400,
            "tampered request"
        );
        let consent = browser.post(&good).await;
        assert!(consent.body.contains("name=\"decision\""), "{consent:?}");
        // The consent form is protected too.
        let mut no_token = consent.hidden();
        no_token.retain(|(k, _)| k != "csrf");
        no_token.push(("decision".into(), "allow".into()));
        assert_eq!(browser.post(&no_token).await.status, 400);

        // Deny: access_denied, with state and iss.
        let denied = browser.decide(&consent, "deny").await.redirect_query();
        assert_eq!(denied["error"], "access_denied");
        assert_eq!(denied["state"], "st8");
        assert_eq!(denied["iss"], issuer);

        // PKCE verifier mismatch at the token endpoint: invalid_grant.
        let req = request(&rp);
        let q = sign_in_and_allow(&browser, &issuer, &req).await;
        let (_, other) = PkceCodeChallenge::new_random_sha256();
        let refused = rp
            .exchange_code(AuthorizationCode::new(q["code"].clone()))
            .unwrap()
            .set_pkce_verifier(other)
            .request_async(&http())
            .await;
        assert_eq!(token_error(refused), CoreErrorResponseType::InvalidGrant);

        // A reused code: invalid_grant, and its refresh token is revoked.
        let req = request(&rp);
        let q = sign_in_and_allow(&browser, &issuer, &req).await;
        let verifier = req.verifier.secret().clone();
        let tokens = exchange(&rp, &q["code"], req.verifier).await;
        let refresh = tokens.refresh_token().unwrap().clone();
        let reused = rp
            .exchange_code(AuthorizationCode::new(q["code"].clone()))
            .unwrap()
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&http())
            .await;
        assert_eq!(token_error(reused), CoreErrorResponseType::InvalidGrant);
        let revoked = rp
            .exchange_refresh_token(&refresh)
            .unwrap()
            .request_async(&http())
            .await;
        assert_eq!(token_error(revoked), CoreErrorResponseType::InvalidGrant);
        Ok(())
    })
    .await;
}

/// A browser whose connections come from `ip` (any 127.0.0.0/8 address
/// is this machine), so per-address limits can be told apart.
fn browser_from(issuer: &str, ip: &str) -> Browser {
    Browser::with_local_address(issuer, ip.parse::<IpAddr>().unwrap())
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_account_and_address() {
    const MAX: u32 = 3;
    const WINDOW: Duration = Duration::from_secs(6);
    for backend in backends() {
        eprintln!("=== scenario on {backend}");
        let mut server = TestServer::start_configured(&backend, |c| {
            c.throttle_max_failures = MAX;
            c.throttle_window = WINDOW;
        })
        .await
        .unwrap();
        let issuer = server.grpc_url();
        let admin = org_and_user(&server, "acme", "ed").await;
        super::web::set_password(&admin, "acme", "ed", PASSWORD).await;
        tollgate_e2e::fixtures::create_user(&admin, "acme", "al", &["viewer"]).await;
        super::web::set_password(&admin, "acme", "al", PASSWORD).await;
        let client = code_client(&admin, "acme", "web", true, &[REDIRECT_URI], "EdDSA").await;
        let rp = relying_party(&issuer, &client.name, None).await;

        let home = browser_from(&issuer, "127.0.0.1");
        let signin = home.get(&request(&rp).url).await;
        // Failures count for the window from the first one, which the
        // server counted between these two instants.
        let before_first = tokio::time::Instant::now();
        let mut after_first = None;
        for _ in 0..MAX {
            let page = home
                .sign_in(&signin, "ed@example.com", "wrong password!")
                .await;
            assert_eq!(page.status, 200);
            assert!(page.body.contains("incorrect"));
            after_first.get_or_insert_with(tokio::time::Instant::now);
        }
        let after_first = after_first.unwrap();
        // The next attempt is refused even with the right password.
        let locked = home.sign_in(&signin, "ed@example.com", PASSWORD).await;
        assert_eq!(locked.status, 429, "{locked:?}");
        assert!(!locked.header("retry-after").is_empty());
        assert!(!locked.body.contains(PASSWORD) && !locked.body.contains("name=\"password\""));
        assert_eq!(locked.header("cache-control"), "no-store");
        // The address is locked out for every account...
        let other = home.sign_in(&signin, "al@example.com", PASSWORD).await;
        assert_eq!(other.status, 429, "per address: {other:?}");
        // ...and the account from every address.
        let away = browser_from(&issuer, "127.0.0.2");
        let away_signin = away.get(&request(&rp).url).await;
        let same_account = away.sign_in(&away_signin, "ed@example.com", PASSWORD).await;
        assert_eq!(same_account.status, 429, "per account: {same_account:?}");
        let fine = away.sign_in(&away_signin, "al@example.com", PASSWORD).await;
        assert!(
            fine.body.contains("name=\"decision\""),
            "another account elsewhere: {fine:?}"
        );

        // After the window, the right password works again.
        assert!(
            before_first.elapsed() < WINDOW,
            "the lockout was checked within the window"
        );
        tokio::time::sleep_until(after_first + WINDOW + Duration::from_millis(200)).await;
        let signin = home.get(&request(&rp).url).await;
        let ok = home.sign_in(&signin, "ed@example.com", PASSWORD).await;
        assert!(
            ok.body.contains("name=\"decision\""),
            "after the window: {ok:?}"
        );
        server.stop().await.unwrap();
    }
}
