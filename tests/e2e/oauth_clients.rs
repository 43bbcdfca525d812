//! OAuthClientService end to end: confidential and public clients, the
//! secret shown once and stored as a digest, field violations, updates
//! under masks and etags, lists, rotation with its grace period (checked
//! through `Store::authenticate_client`, what the token endpoint calls),
//! deletion with the client's codes and refresh tokens, the service
//! account guard, cross-organization refusals, events, and HTTP/JSON.

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use serde_json::json;
use tollgate_e2e::{
    Client, Code, TestServer, curl, each_backend,
    fixtures::{
        create_key, create_oauth_client, create_org, create_sa, mask, oauth_clients, org_name,
    },
    outbox,
    rpc::{RpcResult as _, violated_fields},
    v1::{
        CreateOAuthClientRequest, DeleteOAuthClientRequest, GetOAuthClientRequest,
        ListOAuthClientsRequest, OAuthClient, RotateOAuthClientSecretRequest,
        UpdateOAuthClientRequest,
        o_auth_client::{ClientType, State},
    },
};
use tollgate_server::{
    Config,
    domain::{Error, names::ClientName, oauth_client::PresentedSecret},
    events::WriteContext,
    store::{
        DbConnection, Store, Target,
        oauth_clients::{ClientAuthError, OAuthClientChanges},
        organizations::OrganizationChanges,
        schema::{authorization_codes, oauth_clients as clients_table, refresh_tokens},
    },
};

async fn store_of(server: &TestServer) -> Store {
    tollgate_server::open_store(&Config {
        database_url: server.database_url().to_owned(),
        db_pool_size: 4,
        ..Default::default()
    })
    .await
    .expect("a second store on the test database")
}

fn db(server: &TestServer) -> DbConnection {
    Target::parse(server.database_url())
        .expect("a database URL")
        .establish()
        .expect("a connection to the test database")
}

/// `(secret_digest, previous_secret_digest)` of a client, read from the
/// database.
fn digests(server: &TestServer, org: &str, id: &str) -> (Option<String>, Option<String>) {
    clients_table::table
        .find((org, id))
        .select((
            clients_table::secret_digest,
            clients_table::previous_secret_digest,
        ))
        .first(&mut db(server))
        .expect("the client's row")
}

fn client_name(org: &str, id: &str) -> String {
    format!("organizations/{org}/clients/{id}")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn secs(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

async fn get(client: &Client, name: &str) -> OAuthClient {
    oauth_clients(client)
        .get_o_auth_client(GetOAuthClientRequest { name: name.into() })
        .await
        .expect_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_shown_once_and_stored_as_digests() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let sa = create_sa(&admin, "acme", "worker", &["viewer"]).await;

        let conf = create_oauth_client(&admin, "acme", "svc", false, Some(&sa.name)).await;
        assert_eq!(conf.name, client_name("acme", "svc"));
        assert!(conf.secret.starts_with("tgcs_"), "{}", conf.secret);
        assert_eq!(conf.secret.len(), 5 + 43);
        assert_eq!(conf.client_type, ClientType::Confidential as i32);
        assert_eq!(conf.state, State::Active as i32);
        assert_eq!(conf.service_account, sa.name);
        assert_eq!(conf.signing_algorithm, "EdDSA");
        assert_eq!(conf.access_token_ttl, secs(15 * 60));
        assert_eq!(conf.refresh_token_ttl, secs(30 * 86_400));
        assert_eq!(
            conf.grant_types,
            strings(&["authorization_code", "refresh_token", "client_credentials"])
        );
        assert!(!conf.uid.is_empty() && !conf.etag.is_empty());

        // Only the digest is stored; reads never return the secret.
        let (digest, previous) = digests(server, "acme", "svc");
        let digest = digest.expect("a confidential client has a digest");
        assert_eq!(digest.len(), 64);
        assert_ne!(digest, conf.secret);
        assert!(PresentedSecret::new(&conf.secret).matches(&digest));
        assert_eq!(previous, None);
        let got = get(&admin, &conf.name).await;
        assert!(got.secret.is_empty(), "Get returned the secret");
        assert_eq!(
            got,
            OAuthClient {
                secret: String::new(),
                ..conf.clone()
            }
        );
        let listed = oauth_clients(&admin)
            .list_o_auth_clients(ListOAuthClientsRequest {
                parent: org_name("acme"),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert!(listed.oauth_clients.iter().all(|c| c.secret.is_empty()));

        // A public client gets no secret, and nothing is stored.
        let public = create_oauth_client(&admin, "acme", "spa", true, None).await;
        assert!(public.secret.is_empty());
        assert_eq!(public.client_type, ClientType::Public as i32);
        assert_eq!(digests(server, "acme", "spa"), (None, None));

        // Taken id; generated id.
        oauth_clients(&admin)
            .create_o_auth_client(CreateOAuthClientRequest {
                parent: org_name("acme"),
                oauth_client_id: "spa".into(),
                oauth_client: Some(public.clone()),
            })
            .await
            .expect_code(Code::AlreadyExists);
        let generated = oauth_clients(&admin)
            .create_o_auth_client(CreateOAuthClientRequest {
                parent: org_name("acme"),
                oauth_client_id: String::new(),
                oauth_client: Some(OAuthClient {
                    name: String::new(),
                    ..public
                }),
            })
            .await
            .expect_ok();
        assert!(generated.name.starts_with("organizations/acme/clients/"));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violations_name_their_fields() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_org(&admin, "beta", "Beta").await;
        let beta_sa = create_sa(&admin, "beta", "other", &["viewer"]).await;
        let create = |id: &str, c: OAuthClient| {
            let admin = admin.clone();
            let id = id.to_owned();
            async move {
                oauth_clients(&admin)
                    .create_o_auth_client(CreateOAuthClientRequest {
                        parent: org_name("acme"),
                        oauth_client_id: id,
                        oauth_client: Some(c),
                    })
                    .await
            }
        };
        let s = create(
            "Bad_Id",
            OAuthClient {
                display_name: String::new(),
                redirect_uris: strings(&[
                    "https://ok.example/cb",
                    "http://evil.example/cb",
                    "https://ok.example/cb#frag",
                ]),
                grant_types: strings(&["authorization_code", "password"]),
                scopes: strings(&["openid", "users.fly"]),
                audiences: strings(&["billing", "has space"]),
                access_token_ttl: secs(30),
                refresh_token_ttl: secs(400 * 86_400),
                signing_algorithm: "HS256".into(),
                ..Default::default()
            },
        )
        .await
        .expect_code(Code::InvalidArgument);
        let mut fields = violated_fields(&s);
        fields.sort();
        assert_eq!(
            fields,
            strings(&[
                "oauth_client.access_token_ttl",
                "oauth_client.audiences[1]",
                "oauth_client.client_type",
                "oauth_client.display_name",
                "oauth_client.grant_types[1]",
                "oauth_client.redirect_uris[1]",
                "oauth_client.redirect_uris[2]",
                "oauth_client.refresh_token_ttl",
                "oauth_client.scopes[1]",
                "oauth_client.signing_algorithm",
                "oauth_client_id",
            ]),
            "{}",
            s.message()
        );

        let base = OAuthClient {
            display_name: "App".into(),
            client_type: ClientType::Public as i32,
            redirect_uris: strings(&["https://app.example/cb"]),
            grant_types: strings(&["authorization_code"]),
            ..Default::default()
        };
        // A public client may not use the grants that authenticate it, nor
        // act as a service account.
        let s = create(
            "p1",
            OAuthClient {
                grant_types: strings(&[
                    "authorization_code",
                    "client_credentials",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ]),
                service_account: "organizations/acme/serviceAccounts/x".into(),
                ..base.clone()
            },
        )
        .await
        .expect_code(Code::InvalidArgument);
        assert_eq!(
            violated_fields(&s),
            strings(&[
                "oauth_client.grant_types[1]",
                "oauth_client.grant_types[2]",
                "oauth_client.service_account",
            ])
        );
        // The code grant needs a redirect URI; refresh needs the code grant.
        create(
            "p2",
            OAuthClient {
                redirect_uris: vec![],
                ..base.clone()
            },
        )
        .await
        .expect_invalid("oauth_client.redirect_uris");
        let conf = OAuthClient {
            client_type: ClientType::Confidential as i32,
            redirect_uris: vec![],
            grant_types: strings(&["client_credentials"]),
            ..base.clone()
        };
        create(
            "c1",
            OAuthClient {
                grant_types: strings(&["client_credentials", "refresh_token"]),
                service_account: "organizations/acme/serviceAccounts/x".into(),
                ..conf.clone()
            },
        )
        .await
        .expect_invalid("oauth_client.grant_types[1]");
        // client_credentials needs a service account, of this
        // organization, that exists.
        create("c2", conf.clone())
            .await
            .expect_invalid("oauth_client.service_account");
        create(
            "c3",
            OAuthClient {
                service_account: beta_sa.name.clone(),
                ..conf.clone()
            },
        )
        .await
        .expect_invalid("oauth_client.service_account");
        let s = create(
            "c4",
            OAuthClient {
                service_account: "organizations/acme/serviceAccounts/ghost".into(),
                ..conf.clone()
            },
        )
        .await
        .expect_invalid("oauth_client.service_account");
        assert!(s.message().contains("ghost"), "{}", s.message());
        // Too many redirect URIs; the parent must exist.
        create(
            "p3",
            OAuthClient {
                redirect_uris: (0..21).map(|i| format!("https://a.example/{i}")).collect(),
                ..base.clone()
            },
        )
        .await
        .expect_invalid("oauth_client.redirect_uris");
        oauth_clients(&admin)
            .create_o_auth_client(CreateOAuthClientRequest {
                parent: org_name("nowhere"),
                oauth_client_id: "x".into(),
                oauth_client: Some(base.clone()),
            })
            .await
            .expect_code(Code::NotFound);
        // Native-app loopback redirects are accepted, exactly as sent.
        let native = create(
            "native",
            OAuthClient {
                redirect_uris: strings(&["http://127.0.0.1:8123/cb", "http://[::1]/cb"]),
                ..base
            },
        )
        .await
        .expect_ok();
        assert_eq!(
            native.redirect_uris,
            strings(&["http://127.0.0.1:8123/cb", "http://[::1]/cb"])
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_follow_the_mask_and_the_etag() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let sa = create_sa(&admin, "acme", "worker", &["viewer"]).await;
        let created = create_oauth_client(&admin, "acme", "svc", false, Some(&sa.name)).await;
        let update = |c: OAuthClient, paths: &[&str]| {
            let admin = admin.clone();
            let m = mask(paths);
            async move {
                oauth_clients(&admin)
                    .update_o_auth_client(UpdateOAuthClientRequest {
                        oauth_client: Some(c),
                        update_mask: m,
                    })
                    .await
            }
        };
        // Only the masked fields change; the etag moves on.
        let updated = update(
            OAuthClient {
                name: created.name.clone(),
                display_name: "Ignored".into(),
                redirect_uris: strings(&["https://new.example/cb"]),
                access_token_ttl: secs(3600),
                signing_algorithm: "ES256".into(),
                etag: created.etag.clone(),
                ..Default::default()
            },
            &["redirect_uris", "access_token_ttl", "signing_algorithm"],
        )
        .await
        .expect_ok();
        assert_eq!(updated.display_name, created.display_name);
        assert_eq!(updated.redirect_uris, strings(&["https://new.example/cb"]));
        assert_eq!(updated.access_token_ttl, secs(3600));
        assert_eq!(updated.signing_algorithm, "ES256");
        assert_eq!(updated.grant_types, created.grant_types);
        assert!(updated.secret.is_empty());
        assert_ne!(updated.etag, created.etag);
        assert_eq!(get(&admin, &created.name).await, updated);
        // The old etag is stale.
        update(
            OAuthClient {
                name: created.name.clone(),
                display_name: "Late".into(),
                etag: created.etag.clone(),
                ..Default::default()
            },
            &["display_name"],
        )
        .await
        .expect_code(Code::Aborted);
        // The combination is checked against what stays: no redirect URI
        // for the code grant; no service account for client_credentials.
        update(
            OAuthClient {
                name: created.name.clone(),
                ..Default::default()
            },
            &["redirect_uris"],
        )
        .await
        .expect_invalid("oauth_client.redirect_uris");
        update(
            OAuthClient {
                name: created.name.clone(),
                ..Default::default()
            },
            &["service_account"],
        )
        .await
        .expect_invalid("oauth_client.service_account");
        // client_type is immutable.
        update(
            OAuthClient {
                name: created.name.clone(),
                client_type: ClientType::Public as i32,
                ..Default::default()
            },
            &["client_type"],
        )
        .await
        .expect_invalid("update_mask");
        // Dropping client_credentials then unbinding works; an implicit
        // mask takes what the request populated.
        let narrowed = update(
            OAuthClient {
                name: created.name.clone(),
                grant_types: strings(&["authorization_code"]),
                state: State::Disabled as i32,
                ..Default::default()
            },
            &[],
        )
        .await
        .expect_ok();
        assert_eq!(narrowed.grant_types, strings(&["authorization_code"]));
        assert_eq!(narrowed.state, State::Disabled as i32);
        let unbound = update(
            OAuthClient {
                name: created.name.clone(),
                ..Default::default()
            },
            &["service_account"],
        )
        .await
        .expect_ok();
        assert_eq!(unbound.service_account, "");
        update(
            OAuthClient {
                name: client_name("acme", "ghost"),
                display_name: "x".into(),
                ..Default::default()
            },
            &["display_name"],
        )
        .await
        .expect_code(Code::NotFound);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_page() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_org(&admin, "beta", "Beta").await;
        let sa = create_sa(&admin, "acme", "worker", &["viewer"]).await;
        for id in ["p1", "p2", "p3"] {
            create_oauth_client(&admin, "acme", id, true, None).await;
        }
        for id in ["c1", "c2"] {
            create_oauth_client(&admin, "acme", id, false, Some(&sa.name)).await;
        }
        create_oauth_client(&admin, "beta", "p9", true, None).await;
        let list = |filter: &str, size: i32, token: String| {
            let admin = admin.clone();
            let filter = filter.to_owned();
            async move {
                oauth_clients(&admin)
                    .list_o_auth_clients(ListOAuthClientsRequest {
                        parent: org_name("acme"),
                        page_size: size,
                        page_token: token,
                        filter,
                    })
                    .await
            }
        };
        let first = list("client_type = PUBLIC", 2, String::new())
            .await
            .expect_ok();
        let ids: Vec<_> = first.oauth_clients.iter().map(|c| c.name.clone()).collect();
        assert_eq!(ids, [client_name("acme", "p1"), client_name("acme", "p2")]);
        assert!(!first.next_page_token.is_empty());
        let second = list("client_type = PUBLIC", 2, first.next_page_token.clone())
            .await
            .expect_ok();
        let ids: Vec<_> = second
            .oauth_clients
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(ids, [client_name("acme", "p3")]);
        assert!(second.next_page_token.is_empty());
        // A token of one filter is refused under another.
        list("state = ACTIVE", 2, first.next_page_token)
            .await
            .expect_invalid("page_token");
        let confidential = list("client_type = CONFIDENTIAL", 0, String::new())
            .await
            .expect_ok();
        assert_eq!(confidential.oauth_clients.len(), 2);
        oauth_clients(&admin)
            .update_o_auth_client(UpdateOAuthClientRequest {
                oauth_client: Some(OAuthClient {
                    name: client_name("acme", "c2"),
                    state: State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["state"]),
            })
            .await
            .expect_ok();
        let disabled = list("state = DISABLED", 0, String::new()).await.expect_ok();
        let ids: Vec<_> = disabled
            .oauth_clients
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(ids, [client_name("acme", "c2")]);
        let named = list("display_name = \"Client p2\"", 0, String::new())
            .await
            .expect_ok();
        assert_eq!(named.oauth_clients.len(), 1);
        let all = list("create_time > \"2000-01-01T00:00:00Z\"", 0, String::new())
            .await
            .expect_ok();
        assert_eq!(all.oauth_clients.len(), 5, "beta's client is not listed");
        list("secret = \"x\"", 0, String::new())
            .await
            .expect_invalid("filter");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_old_secret_for_its_grace() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let sa = create_sa(&admin, "acme", "worker", &["viewer"]).await;
        let created = create_oauth_client(&admin, "acme", "svc", false, Some(&sa.name)).await;
        let public = create_oauth_client(&admin, "acme", "spa", true, None).await;
        let store = store_of(server).await;
        let id = created.name.as_str();
        let auth = |secret: Option<&str>| {
            let store = store.clone();
            let secret = secret.map(str::to_owned);
            let id = id.to_owned();
            async move { store.authenticate_client(&id, secret.as_deref()).await }
        };
        let refused =
            |r: Result<_, ClientAuthError>| matches!(r, Err(ClientAuthError::InvalidClient));

        let s0 = created.secret.clone();
        let row = auth(Some(&s0)).await.expect("the first secret works");
        assert_eq!(
            row.service_account().map(|n| n.to_string()),
            Some(sa.name.clone())
        );
        assert!(row.allows_grant("client_credentials") && !row.allows_grant("password"));
        assert!(refused(auth(Some("tgcs_wrong")).await));
        assert!(
            refused(auth(None).await),
            "a confidential client needs its secret"
        );

        // Rotation over the API: 24 hours of grace by default.
        let r1 = oauth_clients(&admin)
            .rotate_o_auth_client_secret(RotateOAuthClientSecretRequest {
                name: created.name.clone(),
                etag: created.etag.clone(),
                ..Default::default()
            })
            .await
            .expect_ok();
        let s1 = r1.secret.clone();
        assert!(s1.starts_with("tgcs_") && s1 != s0);
        let grace_end = r1
            .previous_secret_expire_time
            .as_ref()
            .expect("the previous secret's end")
            .seconds;
        let in_a_day = r1.update_time.as_ref().expect("update time").seconds + 86_400;
        assert!(
            (grace_end - in_a_day).abs() <= 2,
            "{grace_end} vs {in_a_day}"
        );
        let (cur, prev) = digests(server, "acme", "svc");
        assert!(PresentedSecret::new(&s1).matches(&cur.expect("current")));
        assert!(PresentedSecret::new(&s0).matches(&prev.expect("previous")));
        assert!(get(&admin, &created.name).await.secret.is_empty());
        // The etag is stale now.
        oauth_clients(&admin)
            .rotate_o_auth_client_secret(RotateOAuthClientSecretRequest {
                name: created.name.clone(),
                etag: created.etag.clone(),
                ..Default::default()
            })
            .await
            .expect_code(Code::Aborted);
        // Both work. (Through a fresh store: `store` is another replica
        // here, whose cache hears of the API's rotation only through the
        // event bus, which tests do not run.)
        let store2 = store_of(server).await;
        assert!(
            store2.authenticate_client(id, Some(&s0)).await.is_ok(),
            "old secret in grace"
        );
        assert!(
            store2.authenticate_client(id, Some(&s1)).await.is_ok(),
            "new secret"
        );

        // Through the store, so its cache sees the event: a one-second
        // grace ends.
        let name = ClientName::parse("name", id).expect("a client name");
        let ctx = WriteContext::new("organizations/root/serviceAccounts/tester", "rotate");
        let (_, s2) = store
            .rotate_oauth_client_secret(&ctx, name.clone(), String::new(), 1_000_000, |_| Ok(()))
            .await
            .expect("rotation");
        assert!(
            refused(auth(Some(&s0)).await),
            "only one previous secret is kept"
        );
        assert!(auth(Some(&s1)).await.is_ok());
        assert!(auth(Some(s2.expose())).await.is_ok());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(refused(auth(Some(&s1)).await), "after the grace");
        assert!(auth(Some(s2.expose())).await.is_ok());

        // Grace 0 cuts the old secret off at once.
        let r3 = oauth_clients(&admin)
            .rotate_o_auth_client_secret(RotateOAuthClientSecretRequest {
                name: created.name.clone(),
                grace_period: secs(0),
                etag: String::new(),
            })
            .await
            .expect_ok();
        assert_eq!(r3.previous_secret_expire_time, None);
        assert_eq!(digests(server, "acme", "svc").1, None);
        let store3 = store_of(server).await;
        assert!(matches!(
            store3.authenticate_client(id, Some(s2.expose())).await,
            Err(ClientAuthError::InvalidClient)
        ));
        assert!(
            store3
                .authenticate_client(id, Some(&r3.secret))
                .await
                .is_ok()
        );
        // Out-of-range grace; a public client has no secret to rotate.
        for bad in [secs(-1), secs(7 * 86_400 + 1)] {
            oauth_clients(&admin)
                .rotate_o_auth_client_secret(RotateOAuthClientSecretRequest {
                    name: created.name.clone(),
                    grace_period: bad,
                    etag: String::new(),
                })
                .await
                .expect_invalid("grace_period");
        }
        oauth_clients(&admin)
            .rotate_o_auth_client_secret(RotateOAuthClientSecretRequest {
                name: public.name.clone(),
                ..Default::default()
            })
            .await
            .expect_code(Code::FailedPrecondition);

        // Public clients present no secret.
        assert!(store.authenticate_client(&public.name, None).await.is_ok());
        assert!(refused(
            store
                .authenticate_client(&public.name, Some("tgcs_x"))
                .await
        ));
        // Unknown, malformed, disabled, suspended: all the same refusal.
        for bad in [client_name("acme", "ghost"), "svc".to_owned()] {
            assert!(
                refused(store.authenticate_client(&bad, None).await),
                "{bad}"
            );
        }
        let s3 = r3.secret.clone();
        store
            .update_oauth_client(
                &ctx,
                name.clone(),
                String::new(),
                |_| Ok(()),
                OAuthClientChanges {
                    state: Some(State::Disabled as i16),
                    ..Default::default()
                },
            )
            .await
            .expect("disable");
        assert!(refused(auth(Some(&s3)).await), "disabled");
        assert!(matches!(
            store.get_oauth_client_by_id(id).await,
            Err(Error::NotFound { .. })
        ));
        store
            .update_oauth_client(
                &ctx,
                name.clone(),
                String::new(),
                |_| Ok(()),
                OAuthClientChanges {
                    state: Some(State::Active as i16),
                    ..Default::default()
                },
            )
            .await
            .expect("enable");
        assert!(auth(Some(&s3)).await.is_ok());
        assert_eq!(
            store
                .get_oauth_client_by_id(id)
                .await
                .expect("usable")
                .to_proto()
                .name,
            created.name
        );
        store
            .update_organization(
                &ctx,
                tollgate_server::domain::names::OrgName { org: "acme".into() },
                String::new(),
                OrganizationChanges {
                    state: Some(tollgate::tollgate::v1::organization::State::Suspended as i16),
                    ..Default::default()
                },
            )
            .await
            .expect("suspend");
        assert!(refused(auth(Some(&s3)).await), "suspended organization");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_takes_the_codes_and_refresh_tokens_along() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let app = create_oauth_client(&admin, "acme", "app", true, None).await;
        let keep = create_oauth_client(&admin, "acme", "keep", true, None).await;
        let mut conn = db(server);
        for (digest, client) in [("d1", "app"), ("d2", "keep")] {
            diesel::insert_into(authorization_codes::table)
                .values((
                    authorization_codes::digest.eq(digest),
                    authorization_codes::org_id.eq("acme"),
                    authorization_codes::client_id.eq(client),
                    authorization_codes::user_id.eq("u"),
                    authorization_codes::redirect_uri.eq("https://app.example/cb"),
                    authorization_codes::scope.eq("openid"),
                    authorization_codes::audience.eq(""),
                    authorization_codes::auth_time.eq(1_i64),
                    authorization_codes::create_time.eq(1_i64),
                    authorization_codes::expire_time.eq(i64::MAX),
                ))
                .execute(&mut conn)
                .expect("a code");
            diesel::insert_into(refresh_tokens::table)
                .values((
                    refresh_tokens::digest.eq(digest),
                    refresh_tokens::family_id.eq("f"),
                    refresh_tokens::org_id.eq("acme"),
                    refresh_tokens::client_id.eq(client),
                    refresh_tokens::subject_kind.eq(1_i16),
                    refresh_tokens::subject_id.eq("u"),
                    refresh_tokens::scope.eq("openid"),
                    refresh_tokens::audience.eq(""),
                    refresh_tokens::auth_time.eq(1_i64),
                    refresh_tokens::create_time.eq(1_i64),
                    refresh_tokens::expire_time.eq(i64::MAX),
                ))
                .execute(&mut conn)
                .expect("a refresh token");
        }
        oauth_clients(&admin)
            .delete_o_auth_client(DeleteOAuthClientRequest {
                name: app.name.clone(),
                etag: "\"stale\"".into(),
            })
            .await
            .expect_code(Code::Aborted);
        oauth_clients(&admin)
            .delete_o_auth_client(DeleteOAuthClientRequest {
                name: app.name.clone(),
                etag: app.etag.clone(),
            })
            .await
            .expect_ok();
        oauth_clients(&admin)
            .get_o_auth_client(GetOAuthClientRequest {
                name: app.name.clone(),
            })
            .await
            .expect_code(Code::NotFound);
        let codes: Vec<String> = authorization_codes::table
            .select(authorization_codes::client_id)
            .load(&mut conn)
            .expect("codes");
        let tokens: Vec<String> = refresh_tokens::table
            .select(refresh_tokens::client_id)
            .load(&mut conn)
            .expect("tokens");
        assert_eq!(codes, ["keep"], "the deleted client's codes go, no others");
        assert_eq!(tokens, ["keep"]);
        assert!(get(&admin, &keep.name).await.secret.is_empty());
        oauth_clients(&admin)
            .delete_o_auth_client(DeleteOAuthClientRequest {
                name: app.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_code(Code::NotFound);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_organizations_and_stronger_accounts_are_out_of_reach() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_org(&admin, "beta", "Beta").await;
        let beta_admin = create_sa(&admin, "beta", "boss", &["admin"]).await;
        let beta_admin = server.client(&create_key(&admin, &beta_admin.name, "k").await.secret);
        let editor = create_sa(&admin, "acme", "ed", &["editor"]).await;
        let editor = server.client(&create_key(&admin, &editor.name, "k").await.secret);
        let acme_admin_sa = create_sa(&admin, "acme", "root-like", &["admin"]).await;
        let viewer_sa = create_sa(&admin, "acme", "reader", &["viewer"]).await;
        let strong =
            create_oauth_client(&admin, "acme", "strong", false, Some(&acme_admin_sa.name)).await;

        // Another organization's admin learns nothing.
        let s = oauth_clients(&beta_admin)
            .get_o_auth_client(GetOAuthClientRequest {
                name: strong.name.clone(),
            })
            .await
            .expect_code(Code::PermissionDenied);
        assert!(!s.message().contains("root-like"));
        oauth_clients(&beta_admin)
            .list_o_auth_clients(ListOAuthClientsRequest {
                parent: org_name("acme"),
                ..Default::default()
            })
            .await
            .expect_code(Code::PermissionDenied);
        oauth_clients(&beta_admin)
            .rotate_o_auth_client_secret(RotateOAuthClientSecretRequest {
                name: strong.name.clone(),
                ..Default::default()
            })
            .await
            .expect_code(Code::PermissionDenied);

        // An editor may not make, take over or remove a client acting as
        // an admin: its secret would make the editor one.
        let conf = |sa: &str| OAuthClient {
            display_name: "Svc".into(),
            client_type: ClientType::Confidential as i32,
            grant_types: strings(&["client_credentials"]),
            service_account: sa.into(),
            ..Default::default()
        };
        oauth_clients(&editor)
            .create_o_auth_client(CreateOAuthClientRequest {
                parent: org_name("acme"),
                oauth_client_id: "escalate".into(),
                oauth_client: Some(conf(&acme_admin_sa.name)),
            })
            .await
            .expect_code(Code::PermissionDenied);
        oauth_clients(&editor)
            .rotate_o_auth_client_secret(RotateOAuthClientSecretRequest {
                name: strong.name.clone(),
                ..Default::default()
            })
            .await
            .expect_code(Code::PermissionDenied);
        oauth_clients(&editor)
            .delete_o_auth_client(DeleteOAuthClientRequest {
                name: strong.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_code(Code::PermissionDenied);
        let mine = oauth_clients(&editor)
            .create_o_auth_client(CreateOAuthClientRequest {
                parent: org_name("acme"),
                oauth_client_id: "weak".into(),
                oauth_client: Some(conf(&viewer_sa.name)),
            })
            .await
            .expect_ok();
        // ... nor rebind its own client to the admin account.
        oauth_clients(&editor)
            .update_o_auth_client(UpdateOAuthClientRequest {
                oauth_client: Some(OAuthClient {
                    name: mine.name.clone(),
                    service_account: acme_admin_sa.name.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["service_account"]),
            })
            .await
            .expect_code(Code::PermissionDenied);
        assert_eq!(
            get(&admin, &mine.name).await.service_account,
            viewer_sa.name
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_leaves_one_event_with_its_actor() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let editor_sa = create_sa(&admin, "acme", "ed", &["editor"]).await;
        let editor = server.client(&create_key(&admin, &editor_sa.name, "k").await.secret);
        let before = outbox::last_id(server.database_url()).await;
        let created = create_oauth_client(&editor, "acme", "app", false, None).await;
        oauth_clients(&editor)
            .update_o_auth_client(UpdateOAuthClientRequest {
                oauth_client: Some(OAuthClient {
                    name: created.name.clone(),
                    description: "changed".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["description"]),
            })
            .await
            .expect_ok();
        let rotated = oauth_clients(&editor)
            .rotate_o_auth_client_secret(RotateOAuthClientSecretRequest {
                name: created.name.clone(),
                ..Default::default()
            })
            .await
            .expect_ok();
        oauth_clients(&editor)
            .delete_o_auth_client(DeleteOAuthClientRequest {
                name: created.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        let rows = outbox::rows_after(server.database_url(), before).await;
        let types: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "oauthClient.created",
                "oauthClient.updated",
                "oauthClient.secretRotated",
                "oauthClient.deleted"
            ]
        );
        for r in &rows {
            assert_eq!(r.actor, editor_sa.name);
            assert_eq!(r.event.resource, created.name);
            let Some(tollgate::tollgate::v1::event::After::OauthClient(c)) = &r.event.after else {
                panic!("{r:?} carries no client");
            };
            assert!(c.secret.is_empty(), "an event carried a secret");
            let payload = format!("{:?}", r.event);
            assert!(!payload.contains(&created.secret) && !payload.contains(&rotated.secret));
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_creates_and_reads_clients() {
    each_backend(async |server: &mut TestServer| {
        if curl::bin().is_none() {
            return Ok(());
        }
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let dir = tempfile::tempdir()?;
        let body = dir.path().join("body.json");
        std::fs::write(
            &body,
            json!({
                "displayName": "Web",
                "clientType": "PUBLIC",
                "redirectUris": ["https://app.example/cb"],
                "grantTypes": ["authorization_code", "refresh_token"],
                "scopes": ["openid", "users.get"],
                "accessTokenTtl": "600s"
            })
            .to_string(),
        )?;
        let url = format!(
            "http://{}/v1/organizations/acme/clients?oauthClientId=web",
            server.grpc_addr()
        );
        let auth = format!("authorization: Bearer {}", server.admin_key());
        let data = format!("@{}", body.display());
        let r = curl::request(
            curl::Version::Http1,
            &url,
            &[
                "-X",
                "POST",
                "-H",
                &auth,
                "-H",
                "content-type: application/json",
                "--data-binary",
                &data,
            ],
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json()?;
        assert_eq!(v["name"], "organizations/acme/clients/web");
        assert_eq!(v["clientType"], "PUBLIC");
        assert_eq!(v["accessTokenTtl"], "600s");
        assert_eq!(v["signingAlgorithm"], "EdDSA");
        assert!(v.get("secret").is_none_or(|s| s == ""), "{v}");
        let got = get(&admin, "organizations/acme/clients/web").await;
        assert_eq!(got.redirect_uris, strings(&["https://app.example/cb"]));
        Ok(())
    })
    .await;
}
