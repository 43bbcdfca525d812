//! Scopes on API keys: they narrow what the owner's roles grant, a call
//! outside them is PERMISSION_DENIED naming the scope, they are immutable,
//! and a narrowed credential mints only narrower keys.

use tollgate_e2e::{
    Code, each_backend,
    fixtures::{create_org, create_sa, org_name, sa_name},
    rpc::RpcResult as _,
    v1::{ApiKey, CreateApiKeyRequest, GetApiKeyRequest, GetOrganizationRequest, ListUsersRequest},
};

fn scoped(parent: &str, scopes: &[&str]) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        parent: parent.into(),
        api_key: Some(ApiKey {
            display_name: "scoped".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn scopes_narrow_roles() {
    each_backend(async |server| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let sa = create_sa(&admin, "acme", "bot", &["admin"]).await;

        let key = admin
            .api_keys()
            .create_api_key(scoped(&sa.name, &["users.*", "apiKeys.get"]))
            .await
            .expect_ok();
        assert_eq!(key.scopes, ["users.*", "apiKeys.get"]);
        let read_back = admin
            .api_keys()
            .get_api_key(GetApiKeyRequest {
                name: key.name.clone(),
            })
            .await
            .expect_ok();
        assert_eq!(read_back.scopes, key.scopes);

        let bot = server.client(&key.secret);
        bot.users()
            .list_users(ListUsersRequest {
                parent: org_name("acme"),
                ..Default::default()
            })
            .await
            .expect_ok();
        // The admin role would grant it; the scope does not.
        let refused = bot
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: org_name("acme"),
            })
            .await
            .expect_code(Code::PermissionDenied);
        assert!(
            refused.message().contains("organizations.get"),
            "{}",
            refused.message()
        );

        // Bad scopes are named.
        admin
            .api_keys()
            .create_api_key(scoped(&sa.name, &["users.get", "users.fly"]))
            .await
            .expect_invalid("api_key.scopes[1]");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_scoped_key_mints_only_narrower_keys() {
    each_backend(async |server| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let sa = create_sa(&admin, "acme", "bot", &["admin"]).await;
        let key = admin
            .api_keys()
            .create_api_key(scoped(&sa.name, &["apiKeys.*", "users.get"]))
            .await
            .expect_ok();
        let bot = server.client(&key.secret);

        // Without scopes, the new key inherits the minter's.
        let child = bot
            .api_keys()
            .create_api_key(scoped(&sa.name, &[]))
            .await
            .expect_ok();
        assert_eq!(child.scopes, ["apiKeys.*", "users.get"]);
        // Narrower is fine; wider is refused.
        bot.api_keys()
            .create_api_key(scoped(&sa.name, &["users.get"]))
            .await
            .expect_ok();
        let wider = bot
            .api_keys()
            .create_api_key(scoped(&sa.name, &["users.*"]))
            .await
            .expect_code(Code::PermissionDenied);
        assert!(wider.message().contains("users.*"), "{}", wider.message());
        bot.api_keys()
            .create_api_key(scoped(&sa.name, &["*"]))
            .await
            .expect_code(Code::PermissionDenied);

        // An unscoped key of the same owner is unrestricted.
        let free = admin
            .api_keys()
            .create_api_key(scoped(&sa_name("acme", "bot"), &[]))
            .await
            .expect_ok();
        assert!(free.scopes.is_empty());
        server
            .client(&free.secret)
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: org_name("acme"),
            })
            .await
            .expect_ok();
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_scoped_key_registers_only_narrower_clients() {
    each_backend(async |server| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let sa = create_sa(&admin, "acme", "bot", &["admin"]).await;
        let key = admin
            .api_keys()
            .create_api_key(scoped(&sa.name, &["clients.*", "users.get"]))
            .await
            .expect_ok();
        let bot = server.client(&key.secret);
        let client = |id: &str, scopes: &[&str]| tollgate_e2e::v1::CreateOAuthClientRequest {
            parent: org_name("acme"),
            oauth_client_id: id.into(),
            oauth_client: Some(tollgate_e2e::v1::OAuthClient {
                display_name: id.into(),
                client_type: tollgate_e2e::v1::o_auth_client::ClientType::Confidential as i32,
                grant_types: vec!["client_credentials".into()],
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                service_account: sa.name.clone(),
                ..Default::default()
            }),
        };
        bot.oauth_clients()
            .create_o_auth_client(client("narrow", &["users.get"]))
            .await
            .expect_ok();
        let wider = bot
            .oauth_clients()
            .create_o_auth_client(client("wide", &["users.*"]))
            .await
            .expect_code(Code::PermissionDenied);
        assert!(wider.message().contains("users.*"), "{}", wider.message());
        // Nor by an update.
        let s = bot
            .oauth_clients()
            .update_o_auth_client(tollgate_e2e::v1::UpdateOAuthClientRequest {
                oauth_client: Some(tollgate_e2e::v1::OAuthClient {
                    name: "organizations/acme/clients/narrow".into(),
                    scopes: vec!["*".into()],
                    ..Default::default()
                }),
                update_mask: tollgate_e2e::fixtures::mask(&["scopes"]),
            })
            .await
            .expect_code(Code::PermissionDenied);
        assert!(s.message().contains("'*'"), "{}", s.message());
        Ok(())
    })
    .await;
}
