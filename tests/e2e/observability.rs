//! The shipped monitoring stack (`deploy/observability/`) against the real
//! tools: promtool checks the Prometheus configuration and the alert
//! rules and runs their unit tests; a real Prometheus scrapes a live
//! server with the shipped configuration and its HTTP API returns the RED
//! series; every metric the alert rules and the Grafana dashboard use is
//! exported by a live server that has served each kind of work.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tollgate_client::v1::{CreateWebhookRequest, GetOrganizationRequest, Webhook};
use tollgate_e2e::{
    Backend, TestServer,
    fixtures::{create_org, create_user, org_name},
    http, peers,
    receiver::Receiver,
};

fn stack() -> PathBuf {
    peers::workspace_root().join("deploy/observability")
}

fn promtool(tool: &Path, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(stack())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_passes_the_shipped_configuration_and_alert_tests() {
    let Some((_, tool)) = peers::prometheus() else {
        return;
    };
    promtool(&tool, &["check", "config", "prometheus.yml"]);
    promtool(&tool, &["check", "rules", "tollgate-alerts.yml"]);
    promtool(&tool, &["test", "rules", "tollgate-alerts.test.yml"]);
}

/// A Prometheus process, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Runs `server` on the shipped configuration, its target replaced by
    /// `target` and its intervals shortened to a second.
    fn start(server: &Path, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let shipped = std::fs::read_to_string(stack().join("prometheus.yml")).expect("config");
        assert!(shipped.contains("- 127.0.0.1:9090"), "the shipped target");
        let config = shipped
            .replace("- 127.0.0.1:9090", &format!("- {target}"))
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        std::fs::copy(
            stack().join("tollgate-alerts.yml"),
            dir.path().join("tollgate-alerts.yml"),
        )
        .expect("copy rules");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new(server)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The `data.result` of an instant query, once it is not empty.
    async fn query(&self, promql: &str, within: Duration) -> Vec<serde_json::Value> {
        let path = format!(
            "/api/v1/query?query={}",
            form_urlencoded::byte_serialize(promql.as_bytes()).collect::<String>()
        );
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = http::get(self.addr, &path).await
                && r.status == 200
            {
                let body: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
                let result = body["data"]["result"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if !result.is_empty() {
                    return result;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no result for {promql} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_a_live_server_with_the_shipped_configuration() {
    let Some((server_bin, _)) = peers::prometheus() else {
        return;
    };
    let mut server = TestServer::start(&Backend::Sqlite).await.unwrap();
    let admin = server.admin();
    admin
        .organizations()
        .get_organization(GetOrganizationRequest {
            name: "organizations/root".into(),
        })
        .await
        .expect("a good call");
    let _ = admin
        .organizations()
        .get_organization(GetOrganizationRequest {
            name: "organizations/none".into(),
        })
        .await
        .expect_err("NOT_FOUND");
    let prometheus = Prometheus::start(&server_bin, server.admin_addr());
    let within = Duration::from_secs(30);
    const GET: &str = "/tollgate.v1.OrganizationService/GetOrganization";
    // Rate, errors, duration of the calls just made, as Prometheus saw them.
    let ok = prometheus
        .query(
            &format!(
                "tollgate_grpc_requests_total{{job=\"tollgate\",method=\"{GET}\",code=\"OK\"}}"
            ),
            within,
        )
        .await;
    assert!(
        ok[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 1.0,
        "{ok:?}"
    );
    prometheus
        .query(
            &format!("tollgate_grpc_errors_total{{method=\"{GET}\",code=\"NOT_FOUND\"}}"),
            within,
        )
        .await;
    prometheus
        .query(
            &format!(
                "histogram_quantile(0.99, sum by (le) (tollgate_grpc_request_duration_seconds_bucket{{method=\"{GET}\"}}))"
            ),
            within,
        )
        .await;
    // The alert rules loaded and evaluate.
    let rules = http::get(prometheus.addr, "/api/v1/rules").await.unwrap();
    let rules: serde_json::Value = serde_json::from_str(&rules.body).unwrap();
    let loaded: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(loaded.contains(&"TollgateHighErrorRatio"), "{loaded:?}");
    drop(prometheus);
    server.stop().await.unwrap();
}

/// A series' metric name without its histogram suffix.
fn base_name(name: &str) -> &str {
    name.strip_suffix("_bucket")
        .or_else(|| name.strip_suffix("_count"))
        .or_else(|| name.strip_suffix("_sum"))
        .unwrap_or(name)
}

/// The metric names an expression uses, without the histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tollgate_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end] == b'_'
                || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        out.insert(base_name(&text[start..end]).to_owned());
        i = end;
    }
    out
}

/// Every `expr` (and templating query) of the dashboard.
fn dashboard_queries(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(q)) => {
                        out.push_str(q);
                        out.push('\n');
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported_by_a_live_server() {
    let rules = std::fs::read_to_string(stack().join("tollgate-alerts.yml")).unwrap();
    let mut exprs: String = rules
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with('#')
                && !l.contains("summary:")
                && !l.contains("description:")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(stack().join("grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    dashboard_queries(&dashboard, &mut exprs);
    let used = metric_names(&exprs);
    for wanted in [
        "tollgate_grpc_requests_total",
        "tollgate_db_pool_in_use",
        "tollgate_cache_lookups_total",
        "tollgate_relay_lag_seconds",
        "tollgate_ratelimit_decisions_total",
        "tollgate_jobs_oldest_seconds",
    ] {
        assert!(used.contains(wanted), "{wanted} not used: {used:?}");
    }

    // A server that has served calls, run jobs and sent webhook
    // deliveries (one of them refused).
    let mut server = TestServer::start_configured(&Backend::Sqlite, |c| {
        c.webhook_allow_loopback = true;
    })
    .await
    .unwrap();
    let receiver = Receiver::start().await;
    receiver.script([tollgate_e2e::receiver::Answer::Status(410, None)]);
    create_org(&server.admin(), "seen", "Seen").await;
    server
        .admin()
        .webhooks()
        .create_webhook(CreateWebhookRequest {
            parent: org_name("seen"),
            webhook_id: "h".into(),
            webhook: Some(Webhook {
                display_name: "H".into(),
                url: receiver.url(),
                event_types: vec!["user.created".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    create_user(&server.admin(), "seen", "a", &["viewer"]).await;
    create_user(&server.admin(), "seen", "b", &["viewer"]).await;
    receiver.wait_for(2, Duration::from_secs(20)).await;
    let _ = server
        .anonymous()
        .organizations()
        .get_organization(GetOrganizationRequest {
            name: "organizations/root".into(),
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = http::get(server.admin_addr(), "/metrics")
            .await
            .unwrap()
            .body;
        let exported: BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(|n| base_name(n).to_owned())
            .collect();
        let missing: Vec<&String> = used.difference(&exported).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alert rules or the dashboard use metrics a live server does not export: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.stop().await.unwrap();
}

/// The sample lines `/metrics` shows.
async fn sample_lines(server: &TestServer) -> Vec<String> {
    http::get(server.admin_addr(), "/metrics")
        .await
        .expect("/metrics")
        .body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_unknown_methods_add_a_constant_number_of_series() {
    let mut server = TestServer::start(&Backend::Sqlite).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    // Warm: the first unknown call registers the `other` series.
    let call = async |grpc: &mut tonic::client::Grpc<tonic::transport::Channel>, i: usize| {
        grpc.ready().await.expect("ready");
        let path = http_path(&format!("/tollgate.v1.Nope{i}/Call{i}"));
        grpc.unary(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .expect_err("no such method")
        .code()
    };
    call(&mut grpc, 0).await;
    // The recorder is the process's: the other tests of this binary add
    // series of their own meanwhile, so count what unknown paths can add
    // (series labelled `other`, or naming such a path).
    let unknown = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("method=\"other\"") || l.contains("Nope"))
            .count()
    };
    let before = unknown(&sample_lines(&server).await);
    for i in 1..=5_000 {
        let code = call(&mut grpc, i).await;
        assert_ne!(code, tonic::Code::Ok);
    }
    let lines = sample_lines(&server).await;
    let after = unknown(&lines);
    assert!(
        !lines.iter().any(|l| l.contains("Nope")),
        "an unknown path became a label value"
    );
    assert!(
        after <= before + 40,
        "5,000 distinct unknown methods added {} series ({before} → {after})",
        after.saturating_sub(before)
    );
    assert!(before > 0, "the warm-up call counted as `other`");
    server.stop().await.unwrap();
}

fn http_path(p: &str) -> ::http::uri::PathAndQuery {
    ::http::uri::PathAndQuery::try_from(p).expect("a path")
}
