//! ApiKeyService end to end: keys of service accounts and users, the secret
//! shown once and working as a credential, revocation, expiry, and keys
//! dying with their owner.

use std::time::{Duration, SystemTime};

use tollgate_client::prost_types::Timestamp;
use tollgate_e2e::{
    Code, TestServer, each_backend,
    fixtures::{
        create_key, create_org, create_sa, create_user, id_of, probe, sa_name, user_name,
        with_header,
    },
    rpc::RpcResult as _,
    v1::{
        ApiKey, CreateApiKeyRequest, DeleteServiceAccountRequest, DeleteUserRequest,
        GetApiKeyRequest, GetOrganizationRequest, ListApiKeysRequest, RevokeApiKeyRequest,
        api_key::State,
    },
};

fn get(name: &str) -> GetApiKeyRequest {
    GetApiKeyRequest { name: name.into() }
}

fn list(parent: &str, filter: &str) -> ListApiKeysRequest {
    ListApiKeysRequest {
        parent: parent.into(),
        filter: filter.into(),
        ..Default::default()
    }
}

fn revoke(name: &str, etag: &str) -> RevokeApiKeyRequest {
    RevokeApiKeyRequest {
        name: name.into(),
        etag: etag.into(),
    }
}

fn create(parent: &str, display: &str, expire_time: Option<Timestamp>) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        parent: parent.into(),
        api_key: Some(ApiKey {
            display_name: display.into(),
            expire_time,
            ..Default::default()
        }),
    }
}

fn in_future(d: Duration) -> Option<Timestamp> {
    Some(Timestamp::from(SystemTime::now() + d))
}

/// `tg_<16 of [a-z0-9], starting with a letter>_<43 of [A-Za-z0-9]>`.
fn assert_key_format(secret: &str, key_id: &str) {
    let rest = secret
        .strip_prefix("tg_")
        .unwrap_or_else(|| panic!("{secret}"));
    let (id, tail) = rest.split_at(16);
    assert_eq!(id, key_id, "the key id is the resource id");
    assert!(id.starts_with(|c: char| c.is_ascii_lowercase()), "{id}");
    assert!(
        id.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{id}"
    );
    let secret_part = tail.strip_prefix('_').unwrap_or_else(|| panic!("{secret}"));
    assert_eq!(secret_part.len(), 43, "{secret}");
    assert!(
        secret_part.bytes().all(|c| c.is_ascii_alphanumeric()),
        "{secret}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_service_accounts_and_users() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut keys = admin.api_keys();
        create_org(&admin, "keys", "Keys").await;
        let sa = create_sa(&admin, "keys", "ci", &["editor"]).await;
        let user = create_user(&admin, "keys", "dana", &["viewer"]).await;

        // Create: the only response with the secret.
        let deploy = keys
            .create_api_key(create(&sa.name, "deploy", None))
            .await
            .expect_ok();
        let key_id = id_of(&deploy.name).to_owned();
        assert_eq!(deploy.name, format!("{}/apiKeys/{key_id}", sa.name));
        assert_key_format(&deploy.secret, &key_id);
        assert_eq!(deploy.display_name, "deploy");
        assert_eq!(deploy.state, State::Active as i32);
        assert!(deploy.create_time.is_some() && deploy.revoke_time.is_none());
        assert!(deploy.expire_time.is_none());
        assert!(!deploy.etag.is_empty());

        // The secret is a working credential for its owner.
        let as_ci = server.client(&deploy.secret);
        assert_eq!(probe(&as_ci, "keys").await, Code::Ok);
        let own = as_ci
            .service_accounts()
            .get_service_account(tollgate_e2e::v1::GetServiceAccountRequest {
                name: sa.name.clone(),
            })
            .await
            .expect_ok();
        assert_eq!(own, sa);
        // ... also sent as `x-api-key`.
        server
            .anonymous()
            .organizations()
            .get_organization(with_header(
                GetOrganizationRequest {
                    name: "organizations/keys".into(),
                },
                "x-api-key",
                &deploy.secret,
            ))
            .await
            .expect_ok();

        // Get and List never show the secret again.
        let fetched = keys.get_api_key(get(&deploy.name)).await.expect_ok();
        assert!(fetched.secret.is_empty(), "{fetched:?}");
        assert_eq!(
            fetched,
            ApiKey {
                secret: String::new(),
                ..deploy.clone()
            }
        );
        let listed = keys.list_api_keys(list(&sa.name, "")).await.expect_ok();
        assert_eq!(listed.api_keys, std::slice::from_ref(&fetched));
        assert!(listed.next_page_token.is_empty());

        // A user's key, with an expiry.
        let expire_time = in_future(Duration::from_secs(3600));
        let dana_key = keys
            .create_api_key(create(&user.name, "laptop", expire_time))
            .await
            .expect_ok();
        assert!(
            dana_key
                .name
                .starts_with(&format!("{}/apiKeys/", user.name))
        );
        let expected_expiry = expire_time.map(|t| Timestamp {
            seconds: t.seconds,
            nanos: t.nanos / 1000 * 1000,
        });
        assert_eq!(
            dana_key.expire_time, expected_expiry,
            "stored to the microsecond"
        );
        assert_eq!(
            probe(&server.client(&dana_key.secret), "keys").await,
            Code::Ok
        );
        let listed = keys.list_api_keys(list(&user.name, "")).await.expect_ok();
        assert_eq!(listed.api_keys.len(), 1);
        assert_eq!(listed.api_keys[0].name, dana_key.name);
        // Keys are listed per owner.
        assert_eq!(
            keys.list_api_keys(list(&sa.name, ""))
                .await
                .expect_ok()
                .api_keys
                .len(),
            1
        );

        // A key is found only under its own owner.
        keys.get_api_key(get(&format!("{}/apiKeys/{key_id}", user.name)))
            .await
            .expect_code(Code::NotFound);
        keys.get_api_key(get(&format!(
            "{}/apiKeys/{key_id}",
            sa_name("keys", "other")
        )))
        .await
        .expect_code(Code::NotFound);
        keys.get_api_key(get(&format!("{}/apiKeys/aaaaaaaaaaaaaaaa", sa.name)))
            .await
            .expect_code(Code::NotFound);

        // Revoke: the key stops working at once.
        let revoked = keys
            .revoke_api_key(revoke(&deploy.name, &deploy.etag))
            .await
            .expect_ok();
        assert_eq!(revoked.state, State::Revoked as i32);
        assert!(revoked.revoke_time.is_some());
        assert!(revoked.secret.is_empty());
        assert_ne!(revoked.etag, deploy.etag);
        assert_eq!(probe(&as_ci, "keys").await, Code::Unauthenticated);
        assert_eq!(
            keys.get_api_key(get(&deploy.name)).await.expect_ok(),
            revoked
        );
        // Revoking again is a no-op; a stale etag is ABORTED.
        assert_eq!(
            keys.revoke_api_key(revoke(&deploy.name, ""))
                .await
                .expect_ok(),
            revoked
        );
        keys.revoke_api_key(revoke(&deploy.name, &deploy.etag))
            .await
            .expect_code(Code::Aborted);
        assert_eq!(probe(&as_ci, "keys").await, Code::Unauthenticated);
        keys.revoke_api_key(revoke(&format!("{}/apiKeys/zzzzzzzzzzzzzzzz", sa.name), ""))
            .await
            .expect_code(Code::NotFound);

        // The other keys are untouched.
        assert_eq!(
            probe(&server.client(&dana_key.secret), "keys").await,
            Code::Ok
        );
        let second = create_key(&admin, &sa.name, "second").await;
        assert_eq!(
            probe(&server.client(&second.secret), "keys").await,
            Code::Ok
        );
        let listed = keys
            .list_api_keys(list(&sa.name, "state = REVOKED"))
            .await
            .expect_ok();
        assert_eq!(listed.api_keys, std::slice::from_ref(&revoked));
        let listed = keys
            .list_api_keys(list(&sa.name, "state = ACTIVE"))
            .await
            .expect_ok();
        assert_eq!(listed.api_keys.len(), 1);
        assert_eq!(listed.api_keys[0].name, second.name);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_key_requests_name_the_field() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut keys = admin.api_keys();
        create_org(&admin, "keys", "Keys").await;
        let sa = create_sa(&admin, "keys", "ci", &[]).await;

        for bad in [
            "",
            "organizations/keys",
            "organizations/keys/groups/ci",
            "organizations/keys/serviceAccounts/",
            "organizations/keys/serviceAccounts/CI",
            "organizations/keys/serviceAccounts/ci/apiKeys/x",
        ] {
            keys.create_api_key(create(bad, "k", None))
                .await
                .expect_invalid("parent");
            keys.list_api_keys(list(bad, ""))
                .await
                .expect_invalid("parent");
        }
        keys.create_api_key(create(&sa.name, &"k".repeat(201), None))
            .await
            .expect_invalid("api_key.display_name");
        keys.create_api_key(create(&sa.name, "bell\u{7}", None))
            .await
            .expect_invalid("api_key.display_name");
        // A display name is optional for keys.
        keys.create_api_key(create(&sa.name, "", None))
            .await
            .expect_ok();
        let past = Some(Timestamp::from(SystemTime::now() - Duration::from_secs(60)));
        keys.create_api_key(create(&sa.name, "old", past))
            .await
            .expect_invalid("api_key.expire_time");
        let nonsense = Some(Timestamp {
            seconds: 1,
            nanos: -5,
        });
        keys.create_api_key(create(&sa.name, "odd", nonsense))
            .await
            .expect_invalid("api_key.expire_time");
        keys.list_api_keys(list(&sa.name, "colour = red"))
            .await
            .expect_invalid("filter");
        keys.list_api_keys(ListApiKeysRequest {
            parent: sa.name.clone(),
            page_size: -5,
            ..Default::default()
        })
        .await
        .expect_invalid("page_size");

        for bad in [
            "",
            &sa.name,
            "organizations/keys/apiKeys/abc",
            &format!("{}/apiKeys/", sa.name),
            &format!("{}/apiKeys/ABC", sa.name),
            &format!("{}/keys/abc", sa.name),
        ] {
            keys.get_api_key(get(bad)).await.expect_invalid("name");
            keys.revoke_api_key(revoke(bad, ""))
                .await
                .expect_invalid("name");
        }

        // Owners that do not exist.
        keys.create_api_key(create(&sa_name("keys", "ghost"), "k", None))
            .await
            .expect_code(Code::NotFound);
        keys.create_api_key(create(&user_name("keys", "ghost"), "k", None))
            .await
            .expect_code(Code::NotFound);
        keys.list_api_keys(list(&sa_name("keys", "ghost"), ""))
            .await
            .expect_code(Code::NotFound);
        keys.create_api_key(create(&sa_name("nowhere", "ci"), "k", None))
            .await
            .expect_code(Code::NotFound);

        // Only the one valid create above was stored.
        let listed = keys.list_api_keys(list(&sa.name, "")).await.expect_ok();
        assert_eq!(listed.api_keys.len(), 1, "{listed:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_refused() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "keys", "Keys").await;
        let sa = create_sa(&admin, "keys", "temp", &["viewer"]).await;
        let lifetime = Duration::from_secs(2);
        let key = admin
            .api_keys()
            .create_api_key(create(&sa.name, "short-lived", in_future(lifetime)))
            .await
            .expect_ok();
        let client = server.client(&key.secret);
        assert_eq!(
            probe(&client, "keys").await,
            Code::Ok,
            "valid before expiry"
        );
        tokio::time::sleep(lifetime + Duration::from_millis(300)).await;
        let s = client
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: "organizations/keys".into(),
            })
            .await
            .expect_code(Code::Unauthenticated);
        assert!(s.message().contains("expired"), "{s:?}");
        // The key is still listed, as ACTIVE with its past expiry.
        let listed = admin
            .api_keys()
            .list_api_keys(list(&sa.name, ""))
            .await
            .expect_ok();
        assert_eq!(listed.api_keys.len(), 1);
        assert_eq!(
            listed.api_keys[0].expire_time,
            key.expire_time.map(|t| Timestamp {
                seconds: t.seconds,
                nanos: t.nanos / 1000 * 1000,
            })
        );
        Ok(())
    })
    .await;
}

/// A key belongs to its owner, not to the owner's name: once a service
/// account or user is deleted, its keys must stay dead even when a new
/// principal with the same id is created, including keys the server had
/// already seen (and cached) before the delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_deleted_owner_never_come_back() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "keys", "Keys").await;

        let sa = create_sa(&admin, "keys", "ci", &["editor"]).await;
        let sa_key = create_key(&admin, &sa.name, "old").await.secret;
        let old_sa = server.client(&sa_key);
        assert_eq!(probe(&old_sa, "keys").await, Code::Ok);

        let user = create_user(&admin, "keys", "dana", &["viewer"]).await;
        let user_key = create_key(&admin, &user.name, "old").await.secret;
        let old_user = server.client(&user_key);
        assert_eq!(probe(&old_user, "keys").await, Code::Ok);

        admin
            .service_accounts()
            .delete_service_account(DeleteServiceAccountRequest {
                name: sa.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        admin
            .users()
            .delete_user(DeleteUserRequest {
                name: user.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        assert_eq!(probe(&old_sa, "keys").await, Code::Unauthenticated);
        assert_eq!(probe(&old_user, "keys").await, Code::Unauthenticated);

        // Same ids, new principals.
        create_sa(&admin, "keys", "ci", &["editor"]).await;
        create_user(&admin, "keys", "dana", &["viewer"]).await;
        assert_eq!(
            (probe(&old_sa, "keys").await, probe(&old_user, "keys").await),
            (Code::Unauthenticated, Code::Unauthenticated),
            "the keys of the deleted (service account, user) authenticated as their successors"
        );
        // The new principals have no keys.
        for parent in [&sa.name, &user.name] {
            let listed = admin
                .api_keys()
                .list_api_keys(list(parent, ""))
                .await
                .expect_ok();
            assert!(listed.api_keys.is_empty(), "{listed:?}");
        }
        Ok(())
    })
    .await;
}
