//! The curl binary as an HTTP client: HTTP/JSON, Connect and gRPC-Web are
//! tested with the tool users reach for first, over HTTP/1.1 and h2c.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::peers;

/// Which HTTP curl speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.1 (keep-alive, chunked responses).
    Http1,
    /// HTTP/2 without TLS, prior knowledge.
    H2c,
}

impl Version {
    /// Both, for tests that run over each.
    pub const ALL: [Version; 2] = [Version::Http1, Version::H2c];

    fn flag(self) -> &'static str {
        match self {
            Version::Http1 => "--http1.1",
            Version::H2c => "--http2-prior-knowledge",
        }
    }
}

/// What curl saw.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// `1.1` or `2`, as curl reports it.
    pub http_version: String,
    /// The headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails naming the body when it is not.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("status {}, body is not JSON: {}", self.status, self.text()))
    }
}

/// The curl binary, or `None` after [`peers::skip`].
pub fn bin() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("curl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        peers::skip("curl tests", "no curl on PATH (apt-get install curl)");
    }
    found
}

/// Runs curl with `args` against `url` over `version`; `args` are curl's
/// own (`-X`, `-H`, `--data-binary`, …).
pub async fn request(version: Version, url: &str, args: &[&str]) -> anyhow::Result<Response> {
    let Some(bin) = bin() else {
        bail!("curl is not installed");
    };
    let dir = tempfile::tempdir()?;
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let mut cmd = Command::new(bin);
    cmd.args(["-sS", "--max-time", "20", version.flag()])
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "curl {url} failed ({}): {}{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, http_version) = stdout
        .split_once(' ')
        .with_context(|| format!("curl printed {stdout:?}"))?;
    let raw = std::fs::read_to_string(&headers).unwrap_or_default();
    // The last block: after a 100 Continue or an upgrade there are several.
    let block = raw
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status: code.parse().with_context(|| format!("status {code:?}"))?,
        http_version: http_version.to_owned(),
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    })
}
