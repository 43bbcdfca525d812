//! Authentication and authorization end to end: missing and bad
//! credentials, revoked keys, disabled principals, suspended
//! organizations, organization boundaries and the rule that nobody
//! manages principals above their own role. Every method against every
//! kind of caller is the matrix in `authz_matrix.rs`.

use tollgate_client::health::{HealthCheckRequest, ServingStatus};
use tollgate_e2e::{
    Client, Code, TestServer, each_backend,
    fixtures::{
        create_key, create_org, create_sa, create_user, mask, org_name, probe, roles, sa_name,
        user_name, with_header,
    },
    rpc::RpcResult as _,
    v1::{
        CreateApiKeyRequest, CreateOrganizationRequest, CreateUserRequest,
        DeleteOrganizationRequest, DeleteUserRequest, GetOrganizationRequest, GetUserRequest,
        ListApiKeysRequest, ListOrganizationsRequest, ListUsersRequest, Organization,
        RevokeApiKeyRequest, ServiceAccount, SetPasswordRequest, UpdateOrganizationRequest,
        UpdateServiceAccountRequest, UpdateUserRequest, User, organization, service_account, user,
    },
};

fn get_org(org: &str) -> GetOrganizationRequest {
    GetOrganizationRequest {
        name: org_name(org),
    }
}

fn new_user(org: &str, id: &str, role_names: &[&str]) -> CreateUserRequest {
    CreateUserRequest {
        parent: org_name(org),
        user_id: id.into(),
        user: Some(User {
            display_name: id.into(),
            email: format!("{id}@example.com"),
            roles: roles(role_names),
            ..Default::default()
        }),
    }
}

fn new_org(id: &str) -> CreateOrganizationRequest {
    CreateOrganizationRequest {
        organization_id: id.into(),
        organization: Some(Organization {
            display_name: id.into(),
            ..Default::default()
        }),
    }
}

fn list_users(org: &str) -> ListUsersRequest {
    ListUsersRequest {
        parent: org_name(org),
        ..Default::default()
    }
}

async fn set_org_state(admin: &Client, org: &str, state: organization::State) {
    admin
        .organizations()
        .update_organization(UpdateOrganizationRequest {
            organization: Some(Organization {
                name: org_name(org),
                state: state as i32,
                ..Default::default()
            }),
            update_mask: mask(&["state"]),
        })
        .await
        .expect_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_credentials_are_unauthenticated() {
    each_backend(async |server: &mut TestServer| {
        let anonymous = server.anonymous();
        let s = anonymous
            .organizations()
            .get_organization(get_org("root"))
            .await
            .expect_code(Code::Unauthenticated);
        assert!(s.message().contains("credentials required"), "{s:?}");
        anonymous
            .users()
            .list_users(list_users("root"))
            .await
            .expect_code(Code::Unauthenticated);
        anonymous
            .organizations()
            .create_organization(new_org("sneaky"))
            .await
            .expect_code(Code::Unauthenticated);
        // Authentication comes before validation: even an invalid request
        // learns nothing.
        anonymous
            .organizations()
            .get_organization(GetOrganizationRequest { name: "bad".into() })
            .await
            .expect_code(Code::Unauthenticated);

        let admin_key = server.admin_key().to_owned();
        let last = admin_key.chars().last().unwrap_or('a');
        let tampered = format!(
            "{}{}",
            &admin_key[..admin_key.len() - 1],
            if last == 'a' { 'b' } else { 'a' }
        );
        let unknown = format!("tg_{}_{}", "q".repeat(16), "Z".repeat(43));
        let wrong_shape = [
            "garbage",
            "tg_",
            "tg_short_secret",
            &admin_key[..admin_key.len() - 1],
            &format!("{admin_key}x"),
            &admin_key.replacen("tg_", "tk_", 1),
            "eyJhbGciOiJIUzI1NiJ9.e30.sig",
        ];
        for key in wrong_shape.iter().copied().chain([
            unknown.as_str(),
            unknown.as_str(),
            tampered.as_str(),
        ]) {
            let client = server.client(key);
            for _ in 0..2 {
                // Twice: a remembered miss must not turn into a hit.
                assert_eq!(
                    probe(&client, "root").await,
                    Code::Unauthenticated,
                    "key {key:?}"
                );
            }
            client
                .organizations()
                .create_organization(new_org("sneaky"))
                .await
                .expect_code(Code::Unauthenticated);
        }

        // Other schemes and empty headers.
        for value in ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "Token abc"] {
            anonymous
                .organizations()
                .get_organization(with_header(get_org("root"), "authorization", value))
                .await
                .expect_code(Code::Unauthenticated);
        }
        anonymous
            .organizations()
            .get_organization(with_header(
                get_org("root"),
                "authorization",
                &format!("Basic {admin_key}"),
            ))
            .await
            .expect_code(Code::Unauthenticated);
        anonymous
            .organizations()
            .get_organization(with_header(get_org("root"), "x-api-key", &unknown))
            .await
            .expect_code(Code::Unauthenticated);

        // Nothing above was created.
        let admin = server.admin();
        admin
            .organizations()
            .get_organization(get_org("sneaky"))
            .await
            .expect_code(Code::NotFound);

        // The real key works in either header, and any case of "Bearer".
        assert_eq!(probe(&admin, "root").await, Code::Ok);
        for (header, value) in [
            ("x-api-key", admin_key.clone()),
            ("authorization", format!("bearer {admin_key}")),
            ("authorization", format!("BEARER {admin_key}")),
        ] {
            anonymous
                .organizations()
                .get_organization(with_header(get_org("root"), header, &value))
                .await
                .expect_ok();
        }

        // Health checks need no credential.
        let health = anonymous
            .health()
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect_ok();
        assert_eq!(health.status, ServingStatus::Serving as i32);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_disabled_and_suspended_credentials() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "tenant", "Tenant").await;
        let bot = create_sa(&admin, "tenant", "bot", &["admin"]).await;
        let bot_key = create_key(&admin, &bot.name, "bot").await;
        let as_bot = server.client(&bot_key.secret);
        let erin = create_user(&admin, "tenant", "erin", &["editor"]).await;
        let erin_key = create_key(&admin, &erin.name, "erin").await;
        let as_erin = server.client(&erin_key.secret);
        assert_eq!(probe(&as_bot, "tenant").await, Code::Ok);
        assert_eq!(probe(&as_erin, "tenant").await, Code::Ok);

        // A disabled service account's keys are refused, and work again
        // once it is re-enabled.
        let set_sa_state = |state: service_account::State| UpdateServiceAccountRequest {
            service_account: Some(ServiceAccount {
                name: bot.name.clone(),
                state: state as i32,
                ..Default::default()
            }),
            update_mask: mask(&["state"]),
        };
        admin
            .service_accounts()
            .update_service_account(set_sa_state(service_account::State::Disabled))
            .await
            .expect_ok();
        let s = as_bot
            .organizations()
            .get_organization(get_org("tenant"))
            .await
            .expect_code(Code::Unauthenticated);
        assert!(s.message().contains("disabled"), "{s:?}");
        admin
            .service_accounts()
            .update_service_account(set_sa_state(service_account::State::Active))
            .await
            .expect_ok();
        assert_eq!(probe(&as_bot, "tenant").await, Code::Ok);

        // The same for a user.
        let set_user_state = |state: user::State| UpdateUserRequest {
            user: Some(User {
                name: erin.name.clone(),
                state: state as i32,
                ..Default::default()
            }),
            update_mask: mask(&["state"]),
        };
        admin
            .users()
            .update_user(set_user_state(user::State::Disabled))
            .await
            .expect_ok();
        assert_eq!(probe(&as_erin, "tenant").await, Code::Unauthenticated);
        admin
            .users()
            .update_user(set_user_state(user::State::Active))
            .await
            .expect_ok();
        assert_eq!(probe(&as_erin, "tenant").await, Code::Ok);

        // A suspended organization: its members are refused with
        // PERMISSION_DENIED (their key is fine, their tenant is not), and
        // the platform admin still reaches it.
        set_org_state(&admin, "tenant", organization::State::Suspended).await;
        let s = as_bot
            .organizations()
            .get_organization(get_org("tenant"))
            .await
            .expect_code(Code::PermissionDenied);
        assert!(s.message().contains("suspended"), "{s:?}");
        assert_eq!(probe(&as_erin, "tenant").await, Code::PermissionDenied);
        as_bot
            .users()
            .create_user(new_user("tenant", "sneaky", &[]))
            .await
            .expect_code(Code::PermissionDenied);
        assert_eq!(probe(&admin, "tenant").await, Code::Ok);
        set_org_state(&admin, "tenant", organization::State::Active).await;
        assert_eq!(probe(&as_bot, "tenant").await, Code::Ok);
        admin
            .users()
            .get_user(GetUserRequest {
                name: user_name("tenant", "sneaky"),
            })
            .await
            .expect_code(Code::NotFound);

        // A revoked key is refused at once; the owner's other keys work.
        let spare = create_key(&admin, &bot.name, "spare").await;
        admin
            .api_keys()
            .revoke_api_key(RevokeApiKeyRequest {
                name: bot_key.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        let s = as_bot
            .organizations()
            .get_organization(get_org("tenant"))
            .await
            .expect_code(Code::Unauthenticated);
        assert!(s.message().contains("revoked"), "{s:?}");
        assert_eq!(
            probe(&server.client(&spare.secret), "tenant").await,
            Code::Ok
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// What each role may do to each method is the authorization matrix
/// (`authz_matrix.rs`); this is the rule beside it: nobody grants or acts
/// on roles above their own.
async fn editors_write_only_up_to_their_own_role() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let editor = server.client(
            &create_key(
                &admin,
                &create_sa(&admin, "acme", "editor", &["editor"]).await.name,
                "e",
            )
            .await
            .secret,
        );
        let boss = create_user(&admin, "acme", "boss", &["admin"]).await;
        let boss_key = create_key(&admin, &boss.name, "boss").await;
        let admin_sa = create_sa(&admin, "acme", "ops", &["admin"]).await;

        // Editor: writes principals up to its own role.
        let hire = editor
            .users()
            .create_user(new_user("acme", "hire", &["viewer", "editor"]))
            .await
            .expect_ok();
        editor
            .users()
            .set_password(SetPasswordRequest {
                name: hire.name.clone(),
                password: "a long enough secret".into(),
            })
            .await
            .expect_ok();
        let hire_key = editor
            .api_keys()
            .create_api_key(CreateApiKeyRequest {
                parent: hire.name.clone(),
                api_key: None,
            })
            .await
            .expect_ok();
        editor
            .api_keys()
            .revoke_api_key(RevokeApiKeyRequest {
                name: hire_key.name,
                etag: String::new(),
            })
            .await
            .expect_ok();
        // ... but grants no role above its own ...
        editor
            .users()
            .create_user(new_user("acme", "usurper", &["admin"]))
            .await
            .expect_code(Code::PermissionDenied);
        editor
            .users()
            .update_user(UpdateUserRequest {
                user: Some(User {
                    name: hire.name.clone(),
                    roles: roles(&["admin"]),
                    ..Default::default()
                }),
                update_mask: mask(&["roles"]),
            })
            .await
            .expect_code(Code::PermissionDenied);
        // ... and touches no admin: no keys, no changes, no deletes.
        editor
            .api_keys()
            .create_api_key(CreateApiKeyRequest {
                parent: admin_sa.name.clone(),
                api_key: None,
            })
            .await
            .expect_code(Code::PermissionDenied);
        editor
            .api_keys()
            .create_api_key(CreateApiKeyRequest {
                parent: boss.name.clone(),
                api_key: None,
            })
            .await
            .expect_code(Code::PermissionDenied);
        editor
            .api_keys()
            .revoke_api_key(RevokeApiKeyRequest {
                name: boss_key.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_code(Code::PermissionDenied);
        editor
            .users()
            .set_password(SetPasswordRequest {
                name: boss.name.clone(),
                password: "i own you now, boss".into(),
            })
            .await
            .expect_code(Code::PermissionDenied);
        editor
            .users()
            .update_user(UpdateUserRequest {
                user: Some(User {
                    name: boss.name.clone(),
                    state: user::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["state"]),
            })
            .await
            .expect_code(Code::PermissionDenied);
        editor
            .users()
            .delete_user(DeleteUserRequest {
                name: boss.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_code(Code::PermissionDenied);
        editor
            .service_accounts()
            .update_service_account(UpdateServiceAccountRequest {
                service_account: Some(ServiceAccount {
                    name: admin_sa.name.clone(),
                    display_name: "Pwned".into(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .expect_code(Code::PermissionDenied);
        // ... nor the organization itself.
        editor
            .organizations()
            .update_organization(UpdateOrganizationRequest {
                organization: Some(Organization {
                    name: org_name("acme"),
                    display_name: "Editor's Acme".into(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .expect_code(Code::PermissionDenied);

        // None of the refused changes happened.
        let boss_now = admin
            .users()
            .get_user(GetUserRequest {
                name: boss.name.clone(),
            })
            .await
            .expect_ok();
        assert_eq!(boss_now, boss);
        assert_eq!(
            probe(&server.client(&boss_key.secret), "acme").await,
            Code::Ok
        );
        let keys = admin
            .api_keys()
            .list_api_keys(ListApiKeysRequest {
                parent: admin_sa.name.clone(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert!(keys.api_keys.is_empty(), "{keys:?}");
        admin
            .users()
            .get_user(GetUserRequest {
                name: user_name("acme", "usurper"),
            })
            .await
            .expect_code(Code::NotFound);
        let acme = admin
            .organizations()
            .get_organization(get_org("acme"))
            .await
            .expect_ok();
        assert_eq!(acme.display_name, "Acme");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_admins_stay_inside_their_organization() {
    each_backend(async |server: &mut TestServer| {
        let root = server.admin();
        create_org(&root, "acme", "Acme").await;
        create_org(&root, "globex", "Globex").await;
        create_user(&root, "globex", "hank", &["viewer"]).await;
        let acme_admin = server.client(
            &create_key(
                &root,
                &create_sa(&root, "acme", "boss", &["admin"]).await.name,
                "k",
            )
            .await
            .secret,
        );

        // Its own organization: full control, including organizations.update.
        acme_admin
            .users()
            .create_user(new_user("acme", "staff", &["admin"]))
            .await
            .expect_ok();
        let renamed = acme_admin
            .organizations()
            .update_organization(UpdateOrganizationRequest {
                organization: Some(Organization {
                    name: org_name("acme"),
                    display_name: "Acme Inc".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            })
            .await
            .expect_ok();
        assert_eq!(renamed.display_name, "Acme Inc");
        // It sees only its own organization.
        let listed = acme_admin
            .organizations()
            .list_organizations(ListOrganizationsRequest::default())
            .await
            .expect_ok();
        assert_eq!(
            listed
                .organizations
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            ["organizations/acme"]
        );

        // Another organization, existing or not: PERMISSION_DENIED, with
        // nothing revealed about whether it exists.
        for org in ["globex", "root", "nowhere"] {
            acme_admin
                .organizations()
                .get_organization(get_org(org))
                .await
                .expect_code(Code::PermissionDenied);
            acme_admin
                .users()
                .list_users(list_users(org))
                .await
                .expect_code(Code::PermissionDenied);
            acme_admin
                .users()
                .create_user(new_user(org, "mole", &[]))
                .await
                .expect_code(Code::PermissionDenied);
        }
        acme_admin
            .users()
            .get_user(GetUserRequest {
                name: user_name("globex", "hank"),
            })
            .await
            .expect_code(Code::PermissionDenied);
        acme_admin
            .api_keys()
            .create_api_key(CreateApiKeyRequest {
                parent: sa_name("root", "admin"),
                api_key: None,
            })
            .await
            .expect_code(Code::PermissionDenied);
        acme_admin
            .organizations()
            .update_organization(UpdateOrganizationRequest {
                organization: Some(Organization {
                    name: org_name("globex"),
                    state: organization::State::Suspended as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["state"]),
            })
            .await
            .expect_code(Code::PermissionDenied);

        // Creating and deleting organizations is for platform admins only,
        // even one's own.
        acme_admin
            .organizations()
            .create_organization(new_org("startup"))
            .await
            .expect_code(Code::PermissionDenied);
        acme_admin
            .organizations()
            .delete_organization(DeleteOrganizationRequest {
                name: org_name("acme"),
                etag: String::new(),
                force: true,
            })
            .await
            .expect_code(Code::PermissionDenied);

        // Nothing leaked across.
        let globex = root
            .users()
            .list_users(list_users("globex"))
            .await
            .expect_ok();
        assert_eq!(globex.users.len(), 1);
        let globex_org = root
            .organizations()
            .get_organization(get_org("globex"))
            .await
            .expect_ok();
        assert_eq!(globex_org.state, organization::State::Active as i32);
        root.organizations()
            .get_organization(get_org("startup"))
            .await
            .expect_code(Code::NotFound);
        assert_eq!(probe(&acme_admin, "acme").await, Code::Ok);

        // An editor of the root organization is no platform admin.
        let root_editor = server.client(
            &create_key(
                &root,
                &create_sa(&root, "root", "helper", &["editor"]).await.name,
                "k",
            )
            .await
            .secret,
        );
        root_editor
            .organizations()
            .get_organization(get_org("acme"))
            .await
            .expect_code(Code::PermissionDenied);
        let listed = root_editor
            .organizations()
            .list_organizations(ListOrganizationsRequest::default())
            .await
            .expect_ok();
        assert_eq!(
            listed
                .organizations
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            ["organizations/root"]
        );
        root_editor
            .organizations()
            .create_organization(new_org("startup"))
            .await
            .expect_code(Code::PermissionDenied);
        // And it cannot touch the platform admin.
        root_editor
            .api_keys()
            .create_api_key(CreateApiKeyRequest {
                parent: sa_name("root", "admin"),
                api_key: None,
            })
            .await
            .expect_code(Code::PermissionDenied);
        Ok(())
    })
    .await;
}

/// A key that authenticated is remembered (one cache lookup per call);
/// every change to its owner, its organization or the key itself must end
/// that at once on this replica: a demotion, a disable, a suspension, a
/// revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_behind_a_remembered_key_apply_at_once() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let sa = create_sa(&admin, "acme", "ops", &["admin"]).await;
        let key = create_key(&admin, &sa.name, "ops").await;
        let ops = server.client(&key.secret);
        let rename = |n: &str| UpdateOrganizationRequest {
            organization: Some(Organization {
                name: org_name("acme"),
                display_name: n.into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        };
        // Warm: the key is remembered as an admin of acme.
        ops.organizations()
            .update_organization(rename("One"))
            .await
            .expect_ok();
        // Demoted: the very next call is refused.
        admin
            .service_accounts()
            .update_service_account(UpdateServiceAccountRequest {
                service_account: Some(ServiceAccount {
                    name: sa.name.clone(),
                    roles: roles(&["viewer"]),
                    ..Default::default()
                }),
                update_mask: mask(&["roles"]),
            })
            .await
            .expect_ok();
        ops.organizations()
            .update_organization(rename("Two"))
            .await
            .expect_code(Code::PermissionDenied);
        assert_eq!(probe(&ops, "acme").await, Code::Ok, "still a viewer");
        // Suspended organization, then active again.
        set_org_state(&admin, "acme", organization::State::Suspended).await;
        assert_eq!(probe(&ops, "acme").await, Code::PermissionDenied);
        set_org_state(&admin, "acme", organization::State::Active).await;
        assert_eq!(probe(&ops, "acme").await, Code::Ok);
        // Revoked.
        admin
            .api_keys()
            .revoke_api_key(RevokeApiKeyRequest {
                name: key.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        assert_eq!(probe(&ops, "acme").await, Code::Unauthenticated);
        Ok(())
    })
    .await;
}
