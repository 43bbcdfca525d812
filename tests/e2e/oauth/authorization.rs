//! AuthorizationService: other services ask Tollgate whether a principal
//! or a credential may use a permission on a resource, and get the same
//! answer Tollgate's own methods would.

use tollgate_e2e::{
    Code, curl, each_backend,
    fixtures::{create_org, create_sa, create_user, org_name, sa_name, sa_with_key, user_name},
    rpc::RpcResult as _,
    v1::{ApiKey, BatchCheckRequest, CheckRequest, CreateApiKeyRequest, check_request::Subject},
};

fn about(principal: &str, permission: &str, resource: &str) -> CheckRequest {
    CheckRequest {
        subject: Some(Subject::Principal(principal.into())),
        permission: permission.into(),
        resource: resource.into(),
    }
}

fn about_token(token: &str, permission: &str, resource: &str) -> CheckRequest {
    CheckRequest {
        subject: Some(Subject::Token(token.into())),
        permission: permission.into(),
        resource: resource.into(),
    }
}

#[tokio::test]
async fn check_answers_with_the_role_table() {
    each_backend(async |server| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_org(&admin, "beta", "Beta").await;
        create_user(&admin, "acme", "ed", &["editor"]).await;
        create_user(&admin, "acme", "vi", &["viewer"]).await;
        // The asking service: a viewer of acme.
        let asker = server.client(&sa_with_key(&admin, "acme", "gateway", &["viewer"]).await);
        let authz = asker.authorization();

        let yes = authz
            .clone()
            .check(about(
                &user_name("acme", "ed"),
                "users.create",
                "organizations/acme/users/x",
            ))
            .await
            .expect_ok();
        assert!(yes.allowed);
        assert!(yes.reason.contains("editor"), "{}", yes.reason);

        let no = authz
            .clone()
            .check(about(
                &user_name("acme", "vi"),
                "users.delete",
                &org_name("acme"),
            ))
            .await
            .expect_ok();
        assert!(!no.allowed);
        assert!(no.reason.contains("users.delete"), "{}", no.reason);

        // Permissions of other services' collections follow the same verbs.
        let foreign = authz
            .clone()
            .check(about(
                &user_name("acme", "vi"),
                "invoices.get",
                &org_name("acme"),
            ))
            .await
            .expect_ok();
        assert!(foreign.allowed);

        // A principal that does not exist is simply not allowed.
        let ghost = authz
            .clone()
            .check(about(
                &user_name("acme", "ghost"),
                "users.get",
                &org_name("acme"),
            ))
            .await
            .expect_ok();
        assert!(!ghost.allowed);

        // Another tenant's resources are not the asker's business.
        create_user(&admin, "beta", "bo", &["admin"]).await;
        authz
            .clone()
            .check(about(
                &user_name("beta", "bo"),
                "users.get",
                &org_name("beta"),
            ))
            .await
            .expect_code(Code::PermissionDenied);
        // A platform admin may ask about anyone.
        let platform = admin
            .authorization()
            .check(about(
                &user_name("beta", "bo"),
                "users.get",
                &org_name("beta"),
            ))
            .await
            .expect_ok();
        assert!(platform.allowed);

        // Bad questions name the field.
        authz
            .clone()
            .check(about(&user_name("acme", "ed"), "users", &org_name("acme")))
            .await
            .expect_invalid("permission");
        authz
            .clone()
            .check(about(&user_name("acme", "ed"), "users.get", "projects/x"))
            .await
            .expect_invalid("resource");
        authz
            .clone()
            .check(CheckRequest {
                subject: None,
                permission: "users.get".into(),
                resource: org_name("acme"),
            })
            .await
            .expect_invalid("principal");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn check_a_credential_applies_its_scopes() {
    each_backend(async |server| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let sa = create_sa(&admin, "acme", "bot", &["editor"]).await;
        let key = admin
            .api_keys()
            .create_api_key(CreateApiKeyRequest {
                parent: sa.name.clone(),
                api_key: Some(ApiKey {
                    scopes: vec!["users.get".into()],
                    ..Default::default()
                }),
            })
            .await
            .expect_ok();
        let authz = admin.authorization();
        let got = authz
            .clone()
            .check(about_token(&key.secret, "users.get", &org_name("acme")))
            .await
            .expect_ok();
        assert!(got.allowed, "{}", got.reason);
        let outside = authz
            .clone()
            .check(about_token(&key.secret, "users.list", &org_name("acme")))
            .await
            .expect_ok();
        assert!(!outside.allowed);
        assert!(outside.reason.contains("scope"), "{}", outside.reason);
        let bogus = authz
            .clone()
            .check(about_token(
                "tg_notakeyatall",
                "users.get",
                &org_name("acme"),
            ))
            .await
            .expect_ok();
        assert!(!bogus.allowed);
        assert!(bogus.reason.contains("not valid"), "{}", bogus.reason);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn batch_check_answers_in_order_and_is_bounded() {
    each_backend(async |server| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_sa(&admin, "acme", "ro", &["viewer"]).await;
        let ro = sa_name("acme", "ro");
        let authz = admin.authorization();
        let answers = authz
            .clone()
            .batch_check(BatchCheckRequest {
                checks: vec![
                    about(&ro, "users.get", &org_name("acme")),
                    about(&ro, "users.create", &org_name("acme")),
                    about(&ro, "serviceAccounts.list", &org_name("acme")),
                ],
            })
            .await
            .expect_ok();
        let allowed: Vec<bool> = answers.results.iter().map(|r| r.allowed).collect();
        assert_eq!(allowed, [true, false, true]);

        authz
            .clone()
            .batch_check(BatchCheckRequest {
                checks: vec![about(&ro, "users.get", &org_name("acme")); 101],
            })
            .await
            .expect_invalid("checks");
        authz
            .clone()
            .batch_check(BatchCheckRequest {
                checks: vec![
                    about(&ro, "users.get", &org_name("acme")),
                    about(&ro, "nope", &org_name("acme")),
                ],
            })
            .await
            .expect_invalid("checks[1].permission");

        // Over HTTP/JSON, as other services without gRPC ask.
        let body = serde_json::json!({
            "principal": ro,
            "permission": "users.get",
            "resource": "organizations/acme",
        })
        .to_string();
        let auth = format!("authorization: Bearer {}", server.admin_key());
        let reply = curl::request(
            curl::Version::Http1,
            &format!("{}/v1/authorization:check", server.grpc_url()),
            &[
                "-X",
                "POST",
                "-H",
                &auth,
                "-H",
                "content-type: application/json",
                "--data-binary",
                &body,
            ],
        )
        .await?;
        let json = reply.json()?;
        assert_eq!(reply.status, 200, "{json}");
        assert_eq!(json["allowed"], true, "{json}");
        Ok(())
    })
    .await;
}
