//! Envoy's external-authorization and global rate-limit APIs, called the
//! way Envoy would, by an independent client: the real grpcurl binary,
//! knowing the Envoy protos only through the server's reflection.
//! Skipped (with a line on stderr) when grpcurl is not installed; fails
//! instead under `TOLLGATE_TEST_STRICT=1`.

use std::{path::PathBuf, process::Command};

use serde_json::{Value, json};
use tollgate_e2e::{TestServer, backends, each_backend, fixtures::sa_with_key, peers};

/// Runs `grpcurl -plaintext -d <body> <addr> <method>` and parses the
/// JSON it prints.
async fn call(
    bin: &PathBuf,
    server: &TestServer,
    method: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let mut cmd = Command::new(bin);
    cmd.args(["-plaintext", "-max-time", "20", "-d"])
        .arg(body.to_string())
        .arg(server.grpc_addr().to_string())
        .arg(method);
    let output = tokio::task::spawn_blocking(move || cmd.output()).await??;
    anyhow::ensure!(
        output.status.success(),
        "grpcurl {method} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

const CHECK: &str = "envoy.service.auth.v3.Authorization/Check";
const SHOULD_RATE_LIMIT: &str = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

fn check_request(path: &str, headers: Value, extensions: Value) -> Value {
    json!({
        "attributes": {
            "source": {"address": {"socketAddress": {"address": "203.0.113.7", "portValue": 5555}}},
            "request": {"http": {"method": "GET", "path": path, "host": "api.example", "headers": headers}},
            "contextExtensions": extensions,
        }
    })
}

/// The value of header `name` in a list of Envoy `HeaderValueOption`s.
fn header<'a>(list: &'a Value, name: &str) -> Option<&'a str> {
    list.as_array()?
        .iter()
        .find(|h| h["header"]["key"] == name)
        .and_then(|h| h["header"]["value"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_both_envoy_services() {
    let Some(bin) = peers::grpcurl() else {
        return;
    };
    each_backend(async |server: &mut TestServer| {
        let mut cmd = Command::new(&bin);
        cmd.args(["-plaintext", &server.grpc_addr().to_string(), "list"]);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        let list = String::from_utf8_lossy(&out.stdout).into_owned();
        for service in [
            "envoy.service.auth.v3.Authorization",
            "envoy.service.ratelimit.v3.RateLimitService",
            "tollgate.v1.RateLimitService",
        ] {
            assert!(
                list.lines().any(|l| l.trim() == service),
                "{service} not in {list}"
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_authenticates_authorizes_and_names_the_caller_upstream() {
    let Some(bin) = peers::grpcurl() else {
        return;
    };
    each_backend(async |server: &mut TestServer| {
        // No credential: 401 with a challenge and our JSON error.
        let r = call(
            &bin,
            server,
            CHECK,
            &check_request("/billing.v1.Invoices/List", json!({}), json!({})),
        )
        .await?;
        let denied = &r["deniedResponse"];
        assert_eq!(denied["status"]["code"], "Unauthorized", "{r}");
        assert_eq!(
            header(&denied["headers"], "www-authenticate"),
            Some("Bearer realm=\"tollgate\"")
        );
        let body: Value = serde_json::from_str(denied["body"].as_str().unwrap())?;
        assert_eq!(body["code"], 16, "{body}");
        assert_eq!(r["status"]["code"], 16);

        // A bad credential: 401, invalid_token.
        let r = call(
            &bin,
            server,
            CHECK,
            &check_request("/x", json!({"x-api-key": "tg_nope_nope"}), json!({})),
        )
        .await?;
        assert_eq!(r["deniedResponse"]["status"]["code"], "Unauthorized", "{r}");
        assert!(
            header(&r["deniedResponse"]["headers"], "www-authenticate")
                .unwrap()
                .contains("invalid_token")
        );

        // A valid key: OK, with who it is added upstream, never the key.
        let admin = server.admin();
        let key = sa_with_key(&admin, "root", "gateway-caller", &["viewer"]).await;
        let r = call(
            &bin,
            server,
            CHECK,
            &check_request(
                "/billing.v1.Invoices/List",
                json!({"authorization": format!("Bearer {key}")}),
                json!({}),
            ),
        )
        .await?;
        let ok = &r["okResponse"];
        assert!(ok.is_object(), "{r}");
        assert_eq!(
            header(&ok["headers"], "x-tollgate-principal"),
            Some("organizations/root/serviceAccounts/gateway-caller")
        );
        assert_eq!(
            header(&ok["headers"], "x-tollgate-organization"),
            Some("root")
        );
        assert_eq!(header(&ok["headers"], "x-tollgate-scopes"), Some("*"));
        assert!(
            !r.to_string().contains(&key),
            "the credential never goes upstream"
        );
        assert!(
            ok["headers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h["appendAction"] == "OVERWRITE_IF_EXISTS_OR_ADD")
        );

        // The route's permission (a per-route context extension) decides:
        // a viewer may not create.
        let r = call(
            &bin,
            server,
            CHECK,
            &check_request(
                "/billing.v1.Invoices/Create",
                json!({"x-api-key": key}),
                json!({"permission": "invoices.create"}),
            ),
        )
        .await?;
        assert_eq!(r["deniedResponse"]["status"]["code"], "Forbidden", "{r}");
        assert_eq!(r["status"]["code"], 7);
        // And a Tollgate path carries its own method's permission.
        let r = call(
            &bin,
            server,
            CHECK,
            &check_request(
                "/tollgate.v1.UserService/CreateUser",
                json!({"x-api-key": key}),
                json!({}),
            ),
        )
        .await?;
        assert_eq!(r["deniedResponse"]["status"]["code"], "Forbidden", "{r}");
        let r = call(
            &bin,
            server,
            CHECK,
            &check_request(
                "/tollgate.v1.UserService/ListUsers",
                json!({"x-api-key": key}),
                json!({}),
            ),
        )
        .await?;
        assert!(r["okResponse"].is_object(), "{r}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_over_the_limit_with_429_and_retry_after() {
    let Some(bin) = peers::grpcurl() else {
        return;
    };
    for backend in backends() {
        let mut server = TestServer::start_configured(&backend, |c| {
            c.principal_rate_limit = "3/m".into();
        })
        .await
        .unwrap();
        let key = sa_with_key(&server.admin(), "root", "limited", &["viewer"]).await;
        let request = check_request(
            "/orders.v1.Orders/Get",
            json!({"x-api-key": key}),
            json!({}),
        );
        let mut codes = Vec::new();
        let mut last = Value::Null;
        for _ in 0..5 {
            last = call(&bin, &server, CHECK, &request).await.unwrap();
            codes.push(if last["okResponse"].is_object() {
                200
            } else {
                429
            });
        }
        assert_eq!(codes, [200, 200, 200, 429, 429], "{last}");
        let denied = &last["deniedResponse"];
        assert_eq!(denied["status"]["code"], "TooManyRequests");
        let retry: u64 = header(&denied["headers"], "retry-after")
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&retry), "one unit every 20 s: {retry}");
        assert_eq!(
            header(&denied["headers"], "ratelimit-policy"),
            Some("\"default\";q=3;w=60")
        );
        assert!(
            header(&denied["headers"], "ratelimit")
                .unwrap()
                .starts_with("\"default\";r=0;t=")
        );
        assert_eq!(last["status"]["code"], 8);
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn should_rate_limit_answers_ok_for_descriptors_no_policy_matches() {
    let Some(bin) = peers::grpcurl() else {
        return;
    };
    each_backend(async |server: &mut TestServer| {
        let r = call(
            &bin,
            server,
            SHOULD_RATE_LIMIT,
            &json!({"domain": "root", "descriptors": [{"entries": [{"key": "remote_address", "value": "10.0.0.1"}]}]}),
        )
        .await?;
        assert_eq!(r["overallCode"], "OK", "{r}");
        assert_eq!(r["statuses"][0]["code"], "OK");
        // A request without a domain is refused, naming the field.
        let mut cmd = Command::new(&bin);
        cmd.args(["-plaintext", "-d", r#"{"descriptors":[{"entries":[{"key":"a","value":"b"}]}]}"#])
            .arg(server.grpc_addr().to_string())
            .arg(SHOULD_RATE_LIMIT);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("InvalidArgument") && err.contains("domain"), "{err}");
        Ok(())
    })
    .await;
}
