//! Server streaming on every HTTP protocol, on the test-only
//! `tollgate.testing.v1.TranscodeTestService.WatchThings` (our own protos
//! have no streaming method yet): newline-delimited JSON over chunked
//! HTTP/1.1 and h2c as grpc-gateway streams, the same messages over a
//! WebSocket (Python's `websockets` as the client), and Connect's and
//! gRPC-Web's envelopes through `buf curl`.

use std::process::Command;

use serde_json::Value;
use tollgate_e2e::{
    Backend, TESTING_DESCRIPTOR_SET, TestServer,
    curl::{self, Version},
    peers,
};

const WATCH: &str = "/v1/shelves/s1/things:watch";

fn lines(body: &[u8]) -> anyhow::Result<Vec<Value>> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Ok(serde_json::from_slice(l)?))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_streams_results_then_the_error() {
    if curl::bin().is_none() {
        return;
    }
    let mut server = TestServer::start_with_testing_service(&Backend::Sqlite)
        .await
        .unwrap();
    let base = format!("http://{}", server.grpc_addr());
    for version in Version::ALL {
        let r = curl::request(version, &format!("{base}{WATCH}?count=3"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        if version == Version::Http1 {
            assert_eq!(
                r.header("transfer-encoding"),
                Some("chunked"),
                "{:?}",
                r.headers
            );
        }
        let got = lines(&r.body).unwrap();
        assert_eq!(got.len(), 3, "{}", r.text());
        for (i, line) in got.iter().enumerate() {
            let n = i + 1;
            assert_eq!(
                line["result"]["sequence"],
                n.to_string(),
                "uint64 as a string: {line}"
            );
            assert_eq!(
                line["result"]["thing"]["name"],
                format!("shelves/s1/things/{n}")
            );
        }

        // A stream that fails after its messages ends with the error line.
        let r = curl::request(version, &format!("{base}{WATCH}?count=2&fail=true"), &[])
            .await
            .unwrap();
        assert_eq!(
            r.status, 200,
            "the status line went out with the first message"
        );
        let got = lines(&r.body).unwrap();
        assert_eq!(got.len(), 3, "{}", r.text());
        assert!(got[1]["result"].is_object());
        assert_eq!(
            got[2]["error"]["code"], 9,
            "FAILED_PRECONDITION: {}",
            got[2]
        );
        assert!(got[2]["error"]["message"].is_string());

        // Bad parameters are refused before the stream starts.
        let r = curl::request(version, &format!("{base}{WATCH}?count=many"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_carries_the_same_messages() {
    let Some(python) = peers::venv_tool("WebSocket streaming test", "python3") else {
        return;
    };
    let mut server = TestServer::start_with_testing_service(&Backend::Sqlite)
        .await
        .unwrap();
    let script = r#"
import asyncio, sys, websockets
async def main(url):
    async with websockets.connect(url) as ws:
        async for message in ws:
            print(message, flush=True)
    print("CLOSED", ws.close_code, flush=True)
asyncio.run(main(sys.argv[1]))
"#;
    for (query, expect_error) in [("count=3", false), ("count=2&fail=true", true)] {
        let url = format!("ws://{}{WATCH}?{query}", server.grpc_addr());
        let mut cmd = Command::new(&python);
        cmd.args(["-c", script, &url]);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut messages: Vec<&str> = stdout.lines().collect();
        let closed = messages.pop().unwrap_or_default();
        assert!(
            closed.starts_with("CLOSED"),
            "the server closes the socket: {stdout}"
        );
        let frames: Vec<Value> = messages
            .iter()
            .map(|m| serde_json::from_str(m).unwrap())
            .collect();
        if expect_error {
            assert_eq!(frames.len(), 3, "{stdout}");
            assert_eq!(frames[2]["error"]["code"], 9, "{stdout}");
        } else {
            assert_eq!(frames.len(), 3, "{stdout}");
            assert_eq!(frames[2]["result"]["sequence"], "3", "{stdout}");
        }
    }
    server.stop().await.unwrap();
}

/// `buf curl` (Connect, the default, and gRPC-Web), with the test proto's
/// descriptor set as its schema: the service is not in reflection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_grpc_web_stream_through_buf_curl() {
    let Some(buf) = peers::buf() else {
        return;
    };
    let mut server = TestServer::start_with_testing_service(&Backend::Sqlite)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("testing.binpb");
    std::fs::write(&schema, TESTING_DESCRIPTOR_SET).unwrap();
    let url = format!(
        "http://{}/tollgate.testing.v1.TranscodeTestService/WatchThings",
        server.grpc_addr()
    );
    for transport in [
        vec![],
        vec!["--http2-prior-knowledge"],
        vec!["--protocol", "grpcweb"],
        vec!["--protocol", "grpcweb", "--http2-prior-knowledge"],
    ] {
        for (data, fails) in [
            (r#"{"parent":"shelves/b","count":2}"#, false),
            (r#"{"parent":"shelves/b","count":1,"fail":true}"#, true),
        ] {
            let mut cmd = Command::new(&buf);
            cmd.arg("curl").args(&transport).args([
                "--schema",
                &schema.display().to_string(),
                "--timeout",
                "20s",
                "-d",
                data,
                &url,
            ]);
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .unwrap()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                stdout.contains("\"name\": \"shelves/b/things/1\""),
                "{transport:?}: {stdout}{stderr}"
            );
            if fails {
                assert!(!out.status.success(), "{transport:?}: {stdout}");
                assert!(
                    stderr.contains("failed_precondition"),
                    "{transport:?}: {stderr}"
                );
            } else {
                assert!(out.status.success(), "{transport:?}: {stderr}");
                assert!(
                    stdout.contains("\"name\": \"shelves/b/things/2\""),
                    "{transport:?}: {stdout}"
                );
            }
        }
    }
    server.stop().await.unwrap();
}

/// grpc-gateway's metadata mapping, end to end: `Grpc-Metadata-<name>` in
/// becomes `<name>` metadata, and response metadata comes back as
/// `Grpc-Metadata-<name>`; other headers do not pass. Connect passes
/// headers as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_passes_as_grpc_gateway_and_connect_pass_it() {
    if curl::bin().is_none() {
        return;
    }
    let mut server = TestServer::start_with_testing_service(&Backend::Sqlite)
        .await
        .unwrap();
    let base = format!("http://{}", server.grpc_addr());
    for version in Version::ALL {
        let r = curl::request(
            version,
            &format!("{base}/v1/counters/7"),
            &["-H", "grpc-metadata-x-echo: hello"],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json().unwrap()["id"], "7", "int64 as a string");
        assert_eq!(
            r.header("grpc-metadata-x-echoed"),
            Some("hello"),
            "{:?}",
            r.headers
        );
        let r = curl::request(
            version,
            &format!("{base}/v1/counters/7"),
            &["-H", "x-echo: not-forwarded"],
        )
        .await
        .unwrap();
        assert!(
            r.header("grpc-metadata-x-echoed").is_none(),
            "plain headers do not pass: {:?}",
            r.headers
        );
        let r = curl::request(
            version,
            &format!("{base}/tollgate.testing.v1.TranscodeTestService/GetCounter"),
            &[
                "-H",
                "content-type: application/json",
                "-H",
                "x-echo: plain",
                "-d",
                r#"{"id":"7"}"#,
            ],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("x-echoed"),
            Some("plain"),
            "Connect: {:?}",
            r.headers
        );
    }
    server.stop().await.unwrap();
}
