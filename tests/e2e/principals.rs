//! UserService and ServiceAccountService end to end: CRUD, SetPassword,
//! field masks, etags, email rules, duplicates and validation.

use tollgate_e2e::{
    Code, TestServer, each_backend,
    fixtures::{
        create_key, create_org, create_sa, create_user, mask, probe, roles, sa_name, user_name,
    },
    rpc::{RpcResult as _, violated_fields},
    v1::{
        CreateServiceAccountRequest, CreateUserRequest, DeleteServiceAccountRequest,
        DeleteUserRequest, GetServiceAccountRequest, GetUserRequest, ListApiKeysRequest,
        ListServiceAccountsRequest, ListUsersRequest, ServiceAccount, SetPasswordRequest,
        UpdateServiceAccountRequest, UpdateUserRequest, User, service_account, user,
    },
};

fn new_user(id: &str, display: &str, email: &str, role_names: &[&str]) -> CreateUserRequest {
    CreateUserRequest {
        parent: "organizations/people".into(),
        user_id: id.into(),
        user: Some(User {
            display_name: display.into(),
            email: email.into(),
            roles: roles(role_names),
            ..Default::default()
        }),
    }
}

fn update_user(user: User, paths: &[&str]) -> UpdateUserRequest {
    UpdateUserRequest {
        user: Some(user),
        update_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

fn get_user(name: &str) -> GetUserRequest {
    GetUserRequest { name: name.into() }
}

fn update_sa(sa: ServiceAccount, paths: &[&str]) -> UpdateServiceAccountRequest {
    UpdateServiceAccountRequest {
        service_account: Some(sa),
        update_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

fn get_sa(name: &str) -> GetServiceAccountRequest {
    GetServiceAccountRequest { name: name.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_crud_and_set_password() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut users = admin.users();
        create_org(&admin, "people", "People").await;

        let alice = users
            .create_user(new_user(
                "alice",
                "Alice",
                " Alice@Example.COM ",
                &["viewer"],
            ))
            .await
            .expect_ok();
        assert_eq!(alice.name, "organizations/people/users/alice");
        assert_eq!(
            alice.email, "alice@example.com",
            "emails are trimmed and lower-cased"
        );
        assert_eq!(alice.state, user::State::Active as i32);
        assert_eq!(alice.roles, ["viewer"]);
        assert!(!alice.has_password);
        assert!(!alice.uid.is_empty() && !alice.etag.is_empty());
        assert!(alice.create_time.is_some() && alice.update_time.is_some());
        assert_eq!(
            users.get_user(get_user(&alice.name)).await.expect_ok(),
            alice
        );

        // An empty id gets a server-assigned one.
        let anon = users
            .create_user(new_user("", "Anon", "anon@example.com", &[]))
            .await
            .expect_ok();
        assert!(
            anon.name.starts_with("organizations/people/users/"),
            "{}",
            anon.name
        );
        assert_eq!(anon.name.len(), "organizations/people/users/".len() + 36);
        assert!(anon.roles.is_empty());

        let listed = users
            .list_users(ListUsersRequest {
                parent: "organizations/people".into(),
                ..Default::default()
            })
            .await
            .expect_ok();
        let mut expected = vec![alice.clone(), anon.clone()];
        expected.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(listed.users, expected);
        assert!(listed.next_page_token.is_empty());

        let renamed = users
            .update_user(update_user(
                User {
                    name: alice.name.clone(),
                    display_name: "Alice Liddell".into(),
                    ..Default::default()
                },
                &["display_name"],
            ))
            .await
            .expect_ok();
        assert_eq!(renamed.display_name, "Alice Liddell");
        assert_eq!(renamed.email, alice.email);
        assert_eq!(renamed.roles, alice.roles);
        assert_ne!(renamed.etag, alice.etag);

        // SetPassword: reported by has_password, never returned.
        let with_password = users
            .set_password(SetPasswordRequest {
                name: alice.name.clone(),
                password: "correct horse battery staple".into(),
            })
            .await
            .expect_ok();
        assert!(with_password.has_password);
        assert_ne!(
            with_password.etag, renamed.etag,
            "a password change is a change"
        );
        assert_eq!(with_password.display_name, "Alice Liddell");
        assert!(
            users
                .get_user(get_user(&alice.name))
                .await
                .expect_ok()
                .has_password
        );
        for bad in ["short", "eleven chrs", &"p".repeat(1025)] {
            users
                .set_password(SetPasswordRequest {
                    name: alice.name.clone(),
                    password: bad.into(),
                })
                .await
                .expect_invalid("password");
        }
        users
            .set_password(SetPasswordRequest {
                name: user_name("people", "nobody"),
                password: "long enough password".into(),
            })
            .await
            .expect_code(Code::NotFound);
        users
            .set_password(SetPasswordRequest {
                name: "organizations/people/serviceAccounts/alice".into(),
                password: "long enough password".into(),
            })
            .await
            .expect_invalid("name");

        // Delete with the current etag; the user and its keys are gone.
        let key = create_key(&admin, &alice.name, "alice's").await.secret;
        assert_eq!(probe(&server.client(&key), "people").await, Code::Ok);
        users
            .delete_user(DeleteUserRequest {
                name: alice.name.clone(),
                etag: with_password.etag.clone(),
            })
            .await
            .expect_ok();
        users
            .get_user(get_user(&alice.name))
            .await
            .expect_code(Code::NotFound);
        users
            .delete_user(DeleteUserRequest {
                name: alice.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_code(Code::NotFound);
        assert_eq!(
            probe(&server.client(&key), "people").await,
            Code::Unauthenticated
        );
        admin
            .api_keys()
            .list_api_keys(ListApiKeysRequest {
                parent: alice.name.clone(),
                ..Default::default()
            })
            .await
            .expect_code(Code::NotFound);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_masks_etags_and_email_uniqueness() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut users = admin.users();
        create_org(&admin, "people", "People").await;
        users
            .create_user(new_user("alice", "Alice", "alice@example.com", &[]))
            .await
            .expect_ok();
        let bob = users
            .create_user(new_user("bob", "Bob", "bob@example.com", &["viewer"]))
            .await
            .expect_ok();

        // Only the masked field changes.
        let v2 = users
            .update_user(update_user(
                User {
                    name: bob.name.clone(),
                    display_name: "Robert".into(),
                    email: "robert@example.com".into(),
                    roles: roles(&["admin"]),
                    state: user::State::Disabled as i32,
                    ..Default::default()
                },
                &["display_name"],
            ))
            .await
            .expect_ok();
        assert_eq!(v2.display_name, "Robert");
        assert_eq!(v2.email, "bob@example.com");
        assert_eq!(v2.roles, ["viewer"]);
        assert_eq!(v2.state, user::State::Active as i32);

        // An empty mask takes the populated fields only.
        let v3 = users
            .update_user(update_user(
                User {
                    name: bob.name.clone(),
                    roles: roles(&["editor", "viewer", "editor"]),
                    ..Default::default()
                },
                &[],
            ))
            .await
            .expect_ok();
        assert_eq!(
            v3.roles,
            ["viewer", "editor"],
            "roles are de-duplicated, weakest first"
        );
        assert_eq!(v3.display_name, "Robert");
        assert_eq!(v3.email, "bob@example.com");

        // A masked field left empty is cleared.
        let v4 = users
            .update_user(update_user(
                User {
                    name: bob.name.clone(),
                    ..Default::default()
                },
                &["roles"],
            ))
            .await
            .expect_ok();
        assert!(v4.roles.is_empty(), "{v4:?}");

        let v5 = users
            .update_user(update_user(
                User {
                    name: bob.name.clone(),
                    state: user::State::Disabled as i32,
                    email: "Bobby@Example.com".into(),
                    ..Default::default()
                },
                &["state", "email"],
            ))
            .await
            .expect_ok();
        assert_eq!(v5.state, user::State::Disabled as i32);
        assert_eq!(v5.email, "bobby@example.com");

        for path in [
            "has_password",
            "password",
            "uid",
            "name",
            "user.email",
            "emails",
        ] {
            users
                .update_user(update_user(
                    User {
                        name: bob.name.clone(),
                        display_name: "Refused".into(),
                        ..Default::default()
                    },
                    &["display_name", path],
                ))
                .await
                .expect_invalid("update_mask");
        }
        users
            .update_user(update_user(
                User {
                    name: bob.name.clone(),
                    state: 5,
                    ..Default::default()
                },
                &["state"],
            ))
            .await
            .expect_invalid("user.state");
        users
            .update_user(update_user(
                User {
                    name: bob.name.clone(),
                    email: "not-an-email".into(),
                    ..Default::default()
                },
                &["email"],
            ))
            .await
            .expect_invalid("user.email");
        users
            .update_user(update_user(
                User {
                    name: bob.name.clone(),
                    roles: roles(&["viewer", "root"]),
                    ..Default::default()
                },
                &["roles"],
            ))
            .await
            .expect_invalid("user.roles[1]");

        // Emails are unique per organization, compared case-insensitively.
        users
            .update_user(update_user(
                User {
                    name: bob.name.clone(),
                    email: "ALICE@example.com".into(),
                    ..Default::default()
                },
                &["email"],
            ))
            .await
            .expect_code(Code::AlreadyExists);

        // Stale etags are ABORTED on update and delete.
        for stale in [&bob.etag, &v2.etag, &v4.etag] {
            users
                .update_user(update_user(
                    User {
                        name: bob.name.clone(),
                        display_name: "Lost".into(),
                        etag: stale.clone(),
                        ..Default::default()
                    },
                    &["display_name"],
                ))
                .await
                .expect_code(Code::Aborted);
            users
                .delete_user(DeleteUserRequest {
                    name: bob.name.clone(),
                    etag: stale.clone(),
                })
                .await
                .expect_code(Code::Aborted);
        }
        assert_eq!(users.get_user(get_user(&bob.name)).await.expect_ok(), v5);
        let v6 = users
            .update_user(update_user(
                User {
                    name: bob.name.clone(),
                    display_name: "Bob again".into(),
                    etag: v5.etag.clone(),
                    ..Default::default()
                },
                &["display_name"],
            ))
            .await
            .expect_ok();
        users
            .delete_user(DeleteUserRequest {
                name: bob.name.clone(),
                etag: v6.etag,
            })
            .await
            .expect_ok();
        Ok(())
    })
    .await;
}

/// Fails on PostgreSQL as of this writing: the server answers INTERNAL
/// instead of ALREADY_EXISTS there (a server bug, reported with the suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_user_ids_and_emails_are_already_exists() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "people", "People").await;
        let alice = create_user(&admin, "people", "alice", &[]).await;
        // Same id, different email: the id is taken.
        let s = admin
            .users()
            .create_user(new_user("alice", "Alice 2", "alice2@example.com", &[]))
            .await
            .expect_code(Code::AlreadyExists);
        assert!(s.message().contains("alice"), "{s:?}");
        // Another id with the same email, in another case: the email is
        // taken.
        admin
            .users()
            .create_user(new_user("carol", "Carol", "ALICE@example.COM", &[]))
            .await
            .expect_code(Code::AlreadyExists);
        admin
            .users()
            .get_user(get_user(&user_name("people", "carol")))
            .await
            .expect_code(Code::NotFound);
        assert_eq!(
            admin
                .users()
                .get_user(get_user(&alice.name))
                .await
                .expect_ok(),
            alice
        );
        // The same email in another organization is fine.
        create_org(&admin, "others", "Others").await;
        assert_eq!(
            create_user(&admin, "others", "alice", &[]).await.email,
            "alice@example.com"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_service_account_ids_are_already_exists() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "people", "People").await;
        let sa = create_sa(&admin, "people", "robot", &[]).await;
        admin
            .service_accounts()
            .create_service_account(CreateServiceAccountRequest {
                parent: "organizations/people".into(),
                service_account_id: "robot".into(),
                service_account: Some(ServiceAccount {
                    display_name: "Robot 2".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect_code(Code::AlreadyExists);
        assert_eq!(
            admin
                .service_accounts()
                .get_service_account(get_sa(&sa.name))
                .await
                .expect_ok(),
            sa
        );
        // Users and service accounts are separate collections.
        create_user(&admin, "people", "robot", &[]).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_user_requests_name_the_field() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut users = admin.users();
        create_org(&admin, "people", "People").await;

        for bad in [
            "",
            "people",
            "organizations/",
            "organizations/People",
            "organizations/people/users/x",
        ] {
            let mut req = new_user("fine", "Fine", "fine@example.com", &[]);
            req.parent = bad.into();
            users.create_user(req).await.expect_invalid("parent");
            users
                .list_users(ListUsersRequest {
                    parent: bad.into(),
                    ..Default::default()
                })
                .await
                .expect_invalid("parent");
        }
        for bad in ["Fine", "1fine", "fine-", "fi_ne", &"f".repeat(64)] {
            users
                .create_user(new_user(bad, "Fine", "fine@example.com", &[]))
                .await
                .expect_invalid("user_id");
        }
        for bad in [
            "",
            "  ",
            "alice",
            "alice@",
            "@example.com",
            "a@b",
            "a b@c.d",
            "a@b@c.d",
            "a@.com",
        ] {
            users
                .create_user(new_user("fine", "Fine", bad, &[]))
                .await
                .expect_invalid("user.email");
        }
        let long_email = format!("{}@example.com", "a".repeat(250));
        users
            .create_user(new_user("fine", "Fine", &long_email, &[]))
            .await
            .expect_invalid("user.email");
        let long = "d".repeat(201);
        for bad in ["", " ", &long] {
            users
                .create_user(new_user("fine", bad, "fine@example.com", &[]))
                .await
                .expect_invalid("user.display_name");
        }
        users
            .create_user(new_user(
                "fine",
                "Fine",
                "fine@example.com",
                &["viewer", "owner"],
            ))
            .await
            .expect_invalid("user.roles[1]");
        users
            .create_user(new_user("fine", "Fine", "fine@example.com", &["Admin"]))
            .await
            .expect_invalid("user.roles[0]");
        let mut req = new_user("fine", "Fine", "fine@example.com", &[]);
        if let Some(u) = req.user.as_mut() {
            u.state = 3;
        }
        users.create_user(req).await.expect_invalid("user.state");
        users
            .create_user(CreateUserRequest {
                parent: "organizations/people".into(),
                user_id: "fine".into(),
                user: None,
            })
            .await
            .expect_invalid("user.email");

        // All violations at once.
        let s = users
            .create_user(new_user("Bad", "", "nope", &["god"]))
            .await
            .expect_code(Code::InvalidArgument);
        let mut fields = violated_fields(&s);
        fields.sort();
        assert_eq!(
            fields,
            [
                "user.display_name",
                "user.email",
                "user.roles[0]",
                "user_id"
            ]
        );

        // Nothing was stored.
        let listed = users
            .list_users(ListUsersRequest {
                parent: "organizations/people".into(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert!(listed.users.is_empty(), "{listed:?}");

        for bad in [
            "",
            "organizations/people/serviceAccounts/alice",
            "organizations/people/users/",
            "organizations/people/users/Alice",
            "organizations/people/users/alice/apiKeys/x",
            "users/alice",
        ] {
            users.get_user(get_user(bad)).await.expect_invalid("name");
            users
                .delete_user(DeleteUserRequest {
                    name: bad.into(),
                    etag: String::new(),
                })
                .await
                .expect_invalid("name");
            users
                .update_user(update_user(
                    User {
                        name: bad.into(),
                        display_name: "X".into(),
                        ..Default::default()
                    },
                    &[],
                ))
                .await
                .expect_invalid("user.name");
        }
        users
            .update_user(UpdateUserRequest {
                user: None,
                update_mask: None,
            })
            .await
            .expect_invalid("user");

        // Well-formed names of things that do not exist.
        let mut req = new_user("fine", "Fine", "fine@example.com", &[]);
        req.parent = "organizations/nowhere".into();
        users.create_user(req).await.expect_code(Code::NotFound);
        users
            .list_users(ListUsersRequest {
                parent: "organizations/nowhere".into(),
                ..Default::default()
            })
            .await
            .expect_code(Code::NotFound);
        users
            .update_user(update_user(
                User {
                    name: user_name("people", "nobody"),
                    display_name: "X".into(),
                    ..Default::default()
                },
                &[],
            ))
            .await
            .expect_code(Code::NotFound);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_crud_masks_and_validation() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut sas = admin.service_accounts();
        create_org(&admin, "machines", "Machines").await;
        let create = |id: &str, sa: ServiceAccount| CreateServiceAccountRequest {
            parent: "organizations/machines".into(),
            service_account_id: id.into(),
            service_account: Some(sa),
        };

        let ci = sas
            .create_service_account(create(
                "ci",
                ServiceAccount {
                    display_name: "CI".into(),
                    description: "Builds and deploys.\nTwice a day.".into(),
                    roles: roles(&["editor"]),
                    ..Default::default()
                },
            ))
            .await
            .expect_ok();
        assert_eq!(ci.name, sa_name("machines", "ci"));
        assert_eq!(ci.description, "Builds and deploys.\nTwice a day.");
        assert_eq!(ci.roles, ["editor"]);
        assert_eq!(ci.state, service_account::State::Active as i32);
        assert_eq!(
            sas.get_service_account(get_sa(&ci.name)).await.expect_ok(),
            ci
        );

        let batch = create_sa(&admin, "machines", "batch", &["viewer"]).await;
        let listed = sas
            .list_service_accounts(ListServiceAccountsRequest {
                parent: "organizations/machines".into(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert_eq!(listed.service_accounts, [batch.clone(), ci.clone()]);

        // Masks.
        let v2 = sas
            .update_service_account(update_sa(
                ServiceAccount {
                    name: ci.name.clone(),
                    description: "Only deploys.".into(),
                    display_name: "Ignored".into(),
                    ..Default::default()
                },
                &["description"],
            ))
            .await
            .expect_ok();
        assert_eq!(v2.description, "Only deploys.");
        assert_eq!(v2.display_name, "CI");
        let v3 = sas
            .update_service_account(update_sa(
                ServiceAccount {
                    name: ci.name.clone(),
                    state: service_account::State::Disabled as i32,
                    roles: roles(&["viewer"]),
                    ..Default::default()
                },
                &[],
            ))
            .await
            .expect_ok();
        assert_eq!(v3.state, service_account::State::Disabled as i32);
        assert_eq!(v3.roles, ["viewer"]);
        assert_eq!(v3.description, "Only deploys.");
        sas.update_service_account(update_sa(
            ServiceAccount {
                name: ci.name.clone(),
                display_name: "X".into(),
                ..Default::default()
            },
            &["display_name", "email"],
        ))
        .await
        .expect_invalid("update_mask");
        sas.update_service_account(update_sa(
            ServiceAccount {
                name: ci.name.clone(),
                description: "d".repeat(2001),
                ..Default::default()
            },
            &["description"],
        ))
        .await
        .expect_invalid("service_account.description");
        assert_eq!(
            sas.get_service_account(get_sa(&ci.name)).await.expect_ok(),
            v3
        );

        // Etags.
        sas.update_service_account(update_sa(
            ServiceAccount {
                name: ci.name.clone(),
                display_name: "Lost".into(),
                etag: ci.etag.clone(),
                ..Default::default()
            },
            &["display_name"],
        ))
        .await
        .expect_code(Code::Aborted);
        sas.delete_service_account(DeleteServiceAccountRequest {
            name: ci.name.clone(),
            etag: v2.etag.clone(),
        })
        .await
        .expect_code(Code::Aborted);
        assert_eq!(
            sas.get_service_account(get_sa(&ci.name)).await.expect_ok(),
            v3
        );

        // Validation.
        let fine = || ServiceAccount {
            display_name: "Fine".into(),
            ..Default::default()
        };
        for bad in ["CI", "9ci", "ci-", "c/i"] {
            sas.create_service_account(create(bad, fine()))
                .await
                .expect_invalid("service_account_id");
        }
        sas.create_service_account(create(
            "fine",
            ServiceAccount {
                display_name: String::new(),
                ..fine()
            },
        ))
        .await
        .expect_invalid("service_account.display_name");
        sas.create_service_account(create(
            "fine",
            ServiceAccount {
                description: "d".repeat(2001),
                ..fine()
            },
        ))
        .await
        .expect_invalid("service_account.description");
        sas.create_service_account(create(
            "fine",
            ServiceAccount {
                roles: roles(&["superuser"]),
                ..fine()
            },
        ))
        .await
        .expect_invalid("service_account.roles[0]");
        sas.create_service_account(create("fine", ServiceAccount { state: 9, ..fine() }))
            .await
            .expect_invalid("service_account.state");
        sas.create_service_account(CreateServiceAccountRequest {
            parent: "organizations/machines/users/x".into(),
            service_account_id: "fine".into(),
            service_account: Some(fine()),
        })
        .await
        .expect_invalid("parent");
        sas.get_service_account(get_sa("organizations/machines/users/ci"))
            .await
            .expect_invalid("name");
        sas.update_service_account(UpdateServiceAccountRequest {
            service_account: None,
            update_mask: None,
        })
        .await
        .expect_invalid("service_account");
        sas.update_service_account(update_sa(
            ServiceAccount {
                name: "ci".into(),
                display_name: "X".into(),
                ..Default::default()
            },
            &[],
        ))
        .await
        .expect_invalid("service_account.name");
        sas.delete_service_account(DeleteServiceAccountRequest {
            name: "organizations/machines/serviceAccounts/".into(),
            etag: String::new(),
        })
        .await
        .expect_invalid("name");
        sas.get_service_account(get_sa(&sa_name("machines", "nobody")))
            .await
            .expect_code(Code::NotFound);

        // Delete with the current etag takes the keys along.
        let key = create_key(&admin, &batch.name, "batch's").await.secret;
        assert_eq!(probe(&server.client(&key), "machines").await, Code::Ok);
        sas.delete_service_account(DeleteServiceAccountRequest {
            name: batch.name.clone(),
            etag: batch.etag.clone(),
        })
        .await
        .expect_ok();
        sas.get_service_account(get_sa(&batch.name))
            .await
            .expect_code(Code::NotFound);
        assert_eq!(
            probe(&server.client(&key), "machines").await,
            Code::Unauthenticated
        );
        admin
            .api_keys()
            .list_api_keys(ListApiKeysRequest {
                parent: batch.name.clone(),
                ..Default::default()
            })
            .await
            .expect_code(Code::NotFound);
        sas.delete_service_account(DeleteServiceAccountRequest {
            name: ci.name.clone(),
            etag: v3.etag.clone(),
        })
        .await
        .expect_ok();
        let listed = sas
            .list_service_accounts(ListServiceAccountsRequest {
                parent: "organizations/machines".into(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert!(listed.service_accounts.is_empty(), "{listed:?}");
        Ok(())
    })
    .await;
}
