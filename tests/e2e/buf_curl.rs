//! `buf curl`, a second independent client, against a server through gRPC
//! reflection v1 only (grpcurl 1.8 speaks v1alpha), over every protocol it
//! speaks: gRPC, its default Connect and gRPC-Web, on HTTP/1.1 and h2c.
//! Skipped (with a line on stderr) when buf is not installed; fails instead
//! under `TOLLGATE_TEST_STRICT=1`.

use std::{path::PathBuf, process::Command};

use tollgate_e2e::{TestServer, each_backend, peers};

/// Runs `buf curl` over plaintext HTTP/2 with gRPC and reflection v1;
/// returns (success, stdout, stderr).
async fn buf_curl(
    bin: &PathBuf,
    server: &TestServer,
    args: &[&str],
    method: &str,
) -> anyhow::Result<(bool, String, String)> {
    buf_curl_with(
        bin,
        server,
        &["--protocol", "grpc", "--http2-prior-knowledge"],
        args,
        method,
    )
    .await
}

/// Runs `buf curl` with `transport` flags (protocol, HTTP version).
async fn buf_curl_with(
    bin: &PathBuf,
    server: &TestServer,
    transport: &[&str],
    args: &[&str],
    method: &str,
) -> anyhow::Result<(bool, String, String)> {
    let mut cmd = Command::new(bin);
    cmd.arg("curl").args(transport);
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

/// buf curl's default protocol (Connect) and gRPC-Web, each over HTTP/1.1
/// and h2c: reflection, a public call, a create with a key, and an error
/// with its code. The server tells the protocols apart on one port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_speaks_connect_and_grpc_web_on_the_same_port() {
    let Some(bin) = peers::buf() else {
        return;
    };
    each_backend(async |server: &mut TestServer| {
        let bearer = format!("authorization: Bearer {}", server.admin_key());
        let transports: [(&str, &[&str]); 4] = [
            ("connect/http1.1", &[]),
            ("connect/h2c", &["--http2-prior-knowledge"]),
            ("grpcweb/http1.1", &["--protocol", "grpcweb"]),
            (
                "grpcweb/h2c",
                &["--protocol", "grpcweb", "--http2-prior-knowledge"],
            ),
        ];
        for (i, (name, transport)) in transports.iter().enumerate() {
            let (ok, out, err) =
                buf_curl_with(&bin, server, transport, &[], "/grpc.health.v1.Health/Check").await?;
            assert!(
                ok && out.contains("\"status\": \"SERVING\""),
                "{name}: {out}{err}"
            );

            let id = format!("proto{i}");
            let data = format!(
                r#"{{"organization_id":"{id}","organization":{{"display_name":"Via {name}"}}}}"#
            );
            let (ok, out, err) = buf_curl_with(
                &bin,
                server,
                transport,
                &["-H", &bearer, "-d", &data],
                "/tollgate.v1.OrganizationService/CreateOrganization",
            )
            .await?;
            assert!(ok, "{name}: {out}{err}");
            assert!(
                out.contains(&format!("\"name\": \"organizations/{id}\"")),
                "{name}: {out}"
            );
            assert!(out.contains(&format!("Via {name}")), "{name}: {out}");

            // What was created through one protocol reads back through gRPC.
            let (ok, out, err) = buf_curl(
                &bin,
                server,
                &[
                    "-H",
                    &bearer,
                    "-d",
                    &format!(r#"{{"name":"organizations/{id}"}}"#),
                ],
                "/tollgate.v1.OrganizationService/GetOrganization",
            )
            .await?;
            assert!(
                ok && out.contains(&format!("Via {name}")),
                "{name}: {out}{err}"
            );

            // No key: the code survives the protocol.
            let (ok, out, err) = buf_curl_with(
                &bin,
                server,
                transport,
                &["-d", &format!(r#"{{"name":"organizations/{id}"}}"#)],
                "/tollgate.v1.OrganizationService/GetOrganization",
            )
            .await?;
            assert!(!ok, "{name}: {out}");
            assert!(err.contains("unauthenticated"), "{name}: {err}");

            // A missing resource: not_found, with the resource named.
            let (ok, _, err) = buf_curl_with(
                &bin,
                server,
                transport,
                &["-H", &bearer, "-d", r#"{"name":"organizations/nope"}"#],
                "/tollgate.v1.OrganizationService/GetOrganization",
            )
            .await?;
            assert!(
                !ok && err.contains("not_found") && err.contains("organizations/nope"),
                "{name}: {err}"
            );
        }
        Ok(())
    })
    .await;
}
