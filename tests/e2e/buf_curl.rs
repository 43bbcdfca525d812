//! `buf curl`, a second independent client, against a server through gRPC
//! reflection v1 only (grpcurl 1.8 speaks v1alpha). Skipped (with a line on
//! stderr) when buf is not installed; fails instead under
//! `TOLLGATE_TEST_STRICT=1`.

use std::{path::PathBuf, process::Command};

use tollgate_e2e::{TestServer, each_backend, peers};

/// Runs `buf curl` over plaintext HTTP/2 with reflection v1; returns
/// (success, stdout, stderr).
async fn buf_curl(
    bin: &PathBuf,
    server: &TestServer,
    args: &[&str],
    method: &str,
) -> anyhow::Result<(bool, String, String)> {
    let mut cmd = Command::new(bin);
    cmd.args(["curl", "--protocol", "grpc", "--http2-prior-knowledge"]);
    cmd.args(["--reflect-protocol", "grpc-v1", "--timeout", "20s"]);
    cmd.args(args);
    cmd.arg(format!("http://{}{method}", server.grpc_addr()));
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_works_through_reflection_v1() {
    let Some(bin) = peers::buf() else {
        return;
    };
    each_backend(async |server: &mut TestServer| {
        let (ok, out, err) = buf_curl(&bin, server, &["--list-methods"], "").await?;
        assert!(ok, "{err}");
        for m in [
            "tollgate.v1.OrganizationService/CreateOrganization",
            "tollgate.v1.UserService/SetPassword",
            "tollgate.v1.ServiceAccountService/ListServiceAccounts",
            "tollgate.v1.ApiKeyService/RevokeApiKey",
            "grpc.health.v1.Health/Check",
        ] {
            assert!(out.lines().any(|l| l.trim() == m), "{m} missing:\n{out}");
        }

        let (ok, out, err) = buf_curl(&bin, server, &[], "/grpc.health.v1.Health/Check").await?;
        assert!(ok && out.contains("\"status\": \"SERVING\""), "{out}{err}");

        let bearer = format!("authorization: Bearer {}", server.admin_key());
        let (ok, out, err) = buf_curl(
            &bin,
            server,
            &[
                "-H",
                &bearer,
                "-d",
                r#"{"organization_id":"bufco","organization":{"display_name":"Buf Co"}}"#,
            ],
            "/tollgate.v1.OrganizationService/CreateOrganization",
        )
        .await?;
        assert!(
            ok && out.contains("\"name\": \"organizations/bufco\""),
            "{out}{err}"
        );

        // No key: the error comes back with its code.
        let (ok, out, err) = buf_curl(
            &bin,
            server,
            &["-d", r#"{"name":"organizations/bufco"}"#],
            "/tollgate.v1.OrganizationService/GetOrganization",
        )
        .await?;
        assert!(!ok, "{out}");
        assert!(err.contains("unauthenticated"), "{err}");
        Ok(())
    })
    .await;
}
