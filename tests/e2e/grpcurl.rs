//! The real grpcurl binary against a server, with no proto files: every
//! method must be discoverable and callable through server reflection.
//! Skipped (with a line on stderr) when grpcurl is not installed; fails
//! instead under `TOLLGATE_TEST_STRICT=1`.

use std::{path::PathBuf, process::Command};

use tollgate_e2e::{
    Code, TestServer, each_backend, fixtures::probe, peers, rpc::RpcResult as _,
    v1::GetOrganizationRequest,
};

/// What one grpcurl run printed.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "success: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.success, self.stdout, self.stderr
        )
    }
}

/// Runs `grpcurl -plaintext -max-time 20 <args…>` on a blocking thread; the
/// server address goes where `args` has `{addr}`.
async fn grpcurl(bin: &PathBuf, server: &TestServer, args: &[&str]) -> anyhow::Result<Run> {
    let addr = server.grpc_addr().to_string();
    let mut cmd = Command::new(bin);
    cmd.args(["-plaintext", "-max-time", "20"]);
    cmd.args(
        args.iter()
            .map(|a| if *a == "{addr}" { addr.as_str() } else { a }),
    );
    let output = tokio::task::spawn_blocking(move || cmd.output()).await??;
    Ok(Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_works_through_reflection_alone() {
    let Some(bin) = peers::grpcurl() else {
        return;
    };
    each_backend(async |server: &mut TestServer| {
        // `list` needs no credential and shows every service.
        let list = grpcurl(&bin, server, &["{addr}", "list"]).await?;
        assert!(list.success, "{list:?}");
        let services: Vec<&str> = list.stdout.lines().map(str::trim).collect();
        for service in [
            "tollgate.v1.OrganizationService",
            "tollgate.v1.UserService",
            "tollgate.v1.ServiceAccountService",
            "tollgate.v1.ApiKeyService",
            "tollgate.v1.OAuthClientService",
            "tollgate.v1.RateLimitPolicyService",
            "grpc.health.v1.Health",
        ] {
            assert!(services.contains(&service), "{service} missing: {list:?}");
        }

        // `describe` resolves the service and its imports.
        let describe = grpcurl(
            &bin,
            server,
            &["{addr}", "describe", "tollgate.v1.OrganizationService"],
        )
        .await?;
        assert!(describe.success, "{describe:?}");
        for rpc in [
            "CreateOrganization",
            "GetOrganization",
            "ListOrganizations",
            "UpdateOrganization",
            "DeleteOrganization",
        ] {
            assert!(
                describe.stdout.contains(&format!("rpc {rpc} ")),
                "{rpc} missing: {describe:?}"
            );
        }
        let message = grpcurl(
            &bin,
            server,
            &[
                "{addr}",
                "describe",
                "tollgate.v1.CreateOrganizationRequest",
            ],
        )
        .await?;
        assert!(
            message.success && message.stdout.contains("organization_id"),
            "{message:?}"
        );

        // Health, anonymously.
        let health = grpcurl(&bin, server, &["{addr}", "grpc.health.v1.Health/Check"]).await?;
        assert!(health.success, "{health:?}");
        assert!(
            health.stdout.contains("\"status\": \"SERVING\""),
            "{health:?}"
        );

        // A create with the admin key, JSON in, JSON out.
        let bearer = format!("authorization: Bearer {}", server.admin_key());
        let body = r#"{"organization_id":"acme","organization":{"display_name":"Acme"}}"#;
        let create = grpcurl(
            &bin,
            server,
            &[
                "-H",
                &bearer,
                "-d",
                body,
                "{addr}",
                "tollgate.v1.OrganizationService/CreateOrganization",
            ],
        )
        .await?;
        assert!(create.success, "{create:?}");
        assert!(
            create.stdout.contains("\"name\": \"organizations/acme\""),
            "{create:?}"
        );
        // It really happened.
        let acme = server
            .admin()
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: "organizations/acme".into(),
            })
            .await
            .expect_ok();
        assert_eq!(acme.display_name, "Acme");

        // `x-api-key` works too.
        let api_key = format!("x-api-key: {}", server.admin_key());
        let get = grpcurl(
            &bin,
            server,
            &[
                "-H",
                &api_key,
                "-d",
                r#"{"name":"organizations/acme"}"#,
                "{addr}",
                "tollgate.v1.OrganizationService/GetOrganization",
            ],
        )
        .await?;
        assert!(
            get.success && get.stdout.contains("\"displayName\": \"Acme\""),
            "{get:?}"
        );

        // Every tollgate.v1 service answers a call through reflection alone:
        // a user, a service account, its key, the key's listing, then a
        // rate-limit policy for the account.
        let calls: [(&str, &str, &str); 5] = [
            (
                "tollgate.v1.UserService/CreateUser",
                r#"{"parent":"organizations/acme","user_id":"alice","user":{"display_name":"Alice","email":"alice@acme.example","roles":["viewer"]}}"#,
                "\"name\": \"organizations/acme/users/alice\"",
            ),
            (
                "tollgate.v1.ServiceAccountService/CreateServiceAccount",
                r#"{"parent":"organizations/acme","service_account_id":"ci","service_account":{"display_name":"CI","roles":["editor"]}}"#,
                "\"name\": \"organizations/acme/serviceAccounts/ci\"",
            ),
            (
                "tollgate.v1.ApiKeyService/CreateApiKey",
                r#"{"parent":"organizations/acme/serviceAccounts/ci","api_key":{"display_name":"deploys"}}"#,
                "\"secret\": \"tg_",
            ),
            (
                "tollgate.v1.ApiKeyService/ListApiKeys",
                r#"{"parent":"organizations/acme/serviceAccounts/ci"}"#,
                "\"displayName\": \"deploys\"",
            ),
            (
                "tollgate.v1.RateLimitPolicyService/CreateRateLimitPolicy",
                r#"{"parent":"organizations/acme","rate_limit_policy_id":"ci","rate_limit_policy":{"selector":{"principal":"organizations/acme/serviceAccounts/ci"},"limit":{"limit":10,"period":"SECOND"}}}"#,
                "\"name\": \"organizations/acme/rateLimitPolicies/ci\"",
            ),
        ];
        for (method, body, expect) in calls {
            let run = grpcurl(&bin, server, &["-H", &bearer, "-d", body, "{addr}", method]).await?;
            assert!(run.success && run.stdout.contains(expect), "{method}: {run:?}");
        }

        // Without a key: refused, and nothing created.
        let body = r#"{"organization_id":"sneaky","organization":{"display_name":"Sneaky"}}"#;
        let anonymous = grpcurl(
            &bin,
            server,
            &[
                "-d",
                body,
                "{addr}",
                "tollgate.v1.OrganizationService/CreateOrganization",
            ],
        )
        .await?;
        assert!(!anonymous.success, "{anonymous:?}");
        assert!(
            anonymous.stderr.contains("Unauthenticated"),
            "{anonymous:?}"
        );
        assert_eq!(probe(&server.admin(), "sneaky").await, Code::NotFound);

        // Errors carry their details to grpcurl as well.
        let invalid = grpcurl(
            &bin,
            server,
            &[
                "-H",
                &bearer,
                "-d",
                r#"{"organization_id":"Bad_Id","organization":{"display_name":"X"}}"#,
                "{addr}",
                "tollgate.v1.OrganizationService/CreateOrganization",
            ],
        )
        .await?;
        assert!(!invalid.success, "{invalid:?}");
        assert!(invalid.stderr.contains("InvalidArgument"), "{invalid:?}");
        assert!(invalid.stderr.contains("organization_id"), "{invalid:?}");
        Ok(())
    })
    .await;
}
