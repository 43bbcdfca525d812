//! The second load generator: `h2load` (Debian `nghttp2-client`), a small C
//! HTTP/2 client.
//!
//! Why a second one: the tonic generator in [`crate::load`] runs on the same
//! two cores as the server and spends more CPU per call than a bare server
//! does, so it caps both servers at about the same rate and hides most of
//! what Tollgate's request path costs. h2load spends a fraction of that per
//! call, so its throughput ratio shows the server's cost. The targets are
//! judged on its figures; the tonic generator's are still reported.
//!
//! How a round runs, for either server:
//! - The request is one gRPC frame (flag 0, 4-byte big-endian length, the
//!   encoded `GetOrganizationRequest`), written once to a file and sent with
//!   `-d`. The echo's request has the same field 1, so both servers get the
//!   same bytes, the same headers (`content-type: application/grpc`,
//!   `te: trailers`, `x-api-key`) and the same `-c` × `-m` streams.
//! - An unmeasured warm-up run, then the measured run; the server's CPU time
//!   (`/proc/PID/stat`) is read around the measured run only.
//! - h2load judges answers by HTTP status, but gRPC errors travel as
//!   `200 OK` with a `grpc-status` trailer. So each measured run is checked
//!   against the server's own count of OK answers (Tollgate: its
//!   `tollgate_grpc_requests_total{code="OK"}` metric; echo: its `Served`
//!   RPC). The count must grow by at least h2load's succeeded requests and
//!   at most its started ones (streams still open when a timed run ends are
//!   abandoned by h2load but may still be answered); anything else fails
//!   the bench, since a benchmark of error answers is worthless.

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use prost::Message as _;
use tempfile::NamedTempFile;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tollgate::tollgate::v1::GetOrganizationRequest;

use crate::{
    child::{ServerProcess, cpu_time, cpu_time_with_children, machine_cpu_time},
    echo::pb::{ServedRequest, echo_service_client::EchoServiceClient},
    load::{self, Kind, ORG_NAME, Target},
};

/// gRPC path of the call made on Tollgate.
pub const GET_ORGANIZATION_PATH: &str = "/tollgate.v1.OrganizationService/GetOrganization";
/// gRPC path of the call made on the echo baseline.
pub const ECHO_PATH: &str = "/tollgate.bench.echo.v1.EchoService/Echo";

/// How h2load loads a server.
#[derive(Debug, Clone)]
pub struct H2loadSettings {
    /// The `h2load` executable.
    pub bin: PathBuf,
    /// `-c`: HTTP/2 connections.
    pub connections: usize,
    /// `-m`: concurrent streams per connection.
    pub streams: usize,
    /// `-t`: h2load threads (one is plenty on two cores).
    pub threads: usize,
    /// Length of the unmeasured warm-up run before each measured run
    /// (zero: none).
    pub warmup: Duration,
    /// `-D`: length of the measured run.
    pub duration: Duration,
    /// `-n`: a fixed number of requests instead of `duration`.
    pub max_requests: Option<u64>,
    /// `--rps`: requests per second per connection, for a fixed offered
    /// rate (open loop, up to `streams` in flight) instead of as fast as
    /// answers come.
    pub rps: Option<u64>,
}

/// The request body file, deleted when dropped.
pub struct Body {
    file: NamedTempFile,
}

// === impl Body ===

impl Body {
    /// Writes the gRPC frame of `GetOrganizationRequest { name: ORG_NAME }`.
    pub fn write() -> Result<Self> {
        Self::get_organization(ORG_NAME)
    }

    /// Writes the gRPC frame of `GetOrganizationRequest { name }`.
    pub fn get_organization(name: &str) -> Result<Self> {
        let message = GetOrganizationRequest {
            name: name.to_owned(),
        }
        .encode_to_vec();
        Self::of_bytes(&grpc_frame(&message)?)
    }

    /// Writes `bytes` as they are (e.g. a form body).
    pub fn of_bytes(bytes: &[u8]) -> Result<Self> {
        let mut file = tempfile::Builder::new()
            .prefix("tollgate-bench-body-")
            .tempfile()
            .context("cannot create the h2load body file")?;
        file.write_all(bytes)
            .context("cannot write the h2load body file")?;
        file.flush().context("cannot write the h2load body file")?;
        Ok(Self { file })
    }

    /// Where the body is.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// One uncompressed gRPC length-prefixed message: flag byte 0, then the
/// length as 4 bytes big-endian, then the message.
pub fn grpc_frame(message: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(message.len()).context("message too large for one gRPC frame")?;
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    Ok(frame)
}

/// What h2load printed for one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// `finished in`: the length of the run.
    pub elapsed: Duration,
    /// Requests sent.
    pub started: u64,
    /// Requests answered.
    pub done: u64,
    /// Requests answered with a 2xx or 3xx status.
    pub succeeded: u64,
    /// `failed + errored + timeout`.
    pub failed: u64,
    /// Answers with a 2xx status.
    pub status_2xx: u64,
    /// `time for request` mean.
    pub mean: Duration,
    /// `time for request` max.
    pub max: Duration,
}

/// What one measured h2load round gave on one server.
#[derive(Debug, Clone)]
pub struct H2Round {
    /// h2load's own account.
    pub summary: Summary,
    /// How much the server's OK count grew during the run.
    pub server_ok: u64,
    /// Server CPU time during the run.
    pub server_cpu: Duration,
    /// Share of the machine's CPU that processes other than the server,
    /// the bench and h2load used during the run.
    pub other_load: f64,
}

// === impl H2Round ===

impl H2Round {
    /// Requests answered per second.
    pub fn throughput(&self) -> f64 {
        self.summary.succeeded as f64 / self.summary.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Server CPU time per answered request, in microseconds.
    pub fn cpu_per_call_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.summary.succeeded.max(1) as f64
    }
}

/// Runs a warm-up and then one measured h2load run against `target`.
pub async fn run_round(target: &Target, settings: &H2loadSettings, body: &Body) -> Result<H2Round> {
    if !settings.warmup.is_zero() {
        let warmup = H2loadSettings {
            duration: settings.warmup,
            max_requests: None,
            ..settings.clone()
        };
        let summary = run_h2load(target, &warmup, body).await?;
        check_http(target.name(), &summary)?;
    }

    let ok_before = ok_count(target).await?;
    let (busy_before, total_before) = machine_cpu_time()?;
    let server_before = cpu_time(target.pid)?;
    let bench_before = cpu_time_with_children(std::process::id())?;
    let summary = run_h2load(target, settings, body).await?;
    let server_cpu = cpu_time(target.pid)?.saturating_sub(server_before);
    let bench = cpu_time_with_children(std::process::id())?.saturating_sub(bench_before);
    let (busy_after, total_after) = machine_cpu_time()?;
    let ok_after = ok_count(target).await?;

    check_http(target.name(), &summary)?;
    let server_ok = ok_after.saturating_sub(ok_before);
    if server_ok < summary.succeeded || server_ok > summary.started {
        bail!(
            "{}: the server counted {server_ok} OK answers, but h2load had {} succeeded of {} \
             started requests; h2load sees only HTTP statuses, so the others were gRPC errors \
             and the figures are not valid",
            target.name(),
            summary.succeeded,
            summary.started
        );
    }
    let busy = busy_after.saturating_sub(busy_before);
    let capacity = total_after.saturating_sub(total_before);
    let other_load = busy.saturating_sub(server_cpu + bench).as_secs_f64()
        / capacity.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(H2Round {
        summary,
        server_ok,
        server_cpu,
        other_load,
    })
}

/// Fails unless every request h2load finished got a 2xx answer. A timed
/// run may end between a stream's 2xx headers and its end, so h2load can
/// count a few more 2xx statuses than finished requests (at most the
/// streams in flight); never fewer.
pub fn check_http(name: &str, s: &Summary) -> Result<()> {
    const IN_FLIGHT_SLACK: u64 = 1024;
    if s.succeeded == 0
        || s.failed > 0
        || s.done != s.succeeded
        || s.status_2xx < s.succeeded
        || s.status_2xx > s.succeeded + IN_FLIGHT_SLACK
    {
        bail!(
            "{name}: h2load got {} answers, {} succeeded, {} with a 2xx status, {} failed/errored/\
             timed out; the figures are not valid",
            s.done,
            s.succeeded,
            s.status_2xx,
            s.failed
        );
    }
    Ok(())
}

/// Runs h2load once against `target`'s gRPC method and parses its summary.
async fn run_h2load(target: &Target, settings: &H2loadSettings, body: &Body) -> Result<Summary> {
    let path = match target.kind {
        Kind::Echo => ECHO_PATH,
        Kind::Tollgate => GET_ORGANIZATION_PATH,
    };
    let request = Request {
        url: format!("{}{path}", target.url),
        headers: grpc_headers(&target.api_key),
        body: Some(body.path()),
    };
    run(target.name(), settings, &request, None).await
}

/// The headers of a gRPC call with an API key, as h2load `-H` values.
pub fn grpc_headers(api_key: &str) -> Vec<String> {
    grpc_headers_with(format!("x-api-key: {api_key}"))
}

/// The headers of a gRPC call with `authorization: Bearer <credential>`
/// (an access token or an API key), as h2load `-H` values.
pub fn grpc_bearer_headers(credential: &str) -> Vec<String> {
    grpc_headers_with(format!("authorization: Bearer {credential}"))
}

/// The headers of a gRPC call with one more header, `name: value`, as
/// h2load `-H` values.
pub fn grpc_headers_with(credential_header: String) -> Vec<String> {
    vec![
        "content-type: application/grpc".to_owned(),
        "te: trailers".to_owned(),
        credential_header,
    ]
}

/// One request shape for h2load to repeat.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The full URL, `http://host:port/path?query` (h2c, prior knowledge).
    pub url: String,
    /// Extra headers, `name: value` each.
    pub headers: Vec<String>,
    /// The body file; with one h2load sends POST, without one GET.
    pub body: Option<&'a Path>,
}

/// Runs h2load once with `request` and parses its summary; with
/// `log_file`, h2load also writes one line per request there (see
/// [`latencies_from_log`]). The process runs under a [`ServerProcess`]
/// guard, so an interrupted bench kills it too. `name` labels errors.
pub async fn run(
    name: &str,
    settings: &H2loadSettings,
    request: &Request<'_>,
    log_file: Option<&Path>,
) -> Result<Summary> {
    let dir = tempfile::Builder::new()
        .prefix("tollgate-bench-h2load-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let stdout = dir.path().join("stdout.log");
    let stderr = dir.path().join("stderr.log");
    let mut command = Command::new(&settings.bin);
    command
        .arg("-c")
        .arg(settings.connections.to_string())
        .arg("-m")
        .arg(settings.streams.to_string())
        .arg("-t")
        .arg(settings.threads.to_string());
    if let Some(body) = request.body {
        command.arg("-d").arg(body);
    }
    for header in &request.headers {
        command.arg("-H").arg(header);
    }
    if let Some(log) = log_file {
        command.arg(format!("--log-file={}", log.display()));
    }
    if let Some(rps) = settings.rps {
        command.arg(format!("--rps={rps}"));
    }
    match settings.max_requests {
        Some(n) => command.arg("-n").arg(n.to_string()),
        // h2load reads a bare number as seconds and accepts an `ms` suffix.
        None => command
            .arg("-D")
            .arg(format!("{}ms", settings.duration.as_millis().max(1))),
    };
    command.arg(&request.url);

    let mut process = ServerProcess::spawn_with_stdout(
        "h2load",
        command,
        &stdout,
        &stderr,
        Duration::ZERO,
    )
    .with_context(|| {
        format!(
            "cannot run {}; install it with `apt-get install nghttp2-client` (see `just peers`)",
            settings.bin.display()
        )
    })?;
    let status: ExitStatus = loop {
        if let Some(status) = process.try_exit()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let text = std::fs::read_to_string(&stdout).context("cannot read h2load's output")?;
    if !status.success() {
        bail!(
            "h2load failed ({status}) on {name}; its stderr ends with:\n{}\n{}",
            process.stderr_tail(),
            text
        );
    }
    parse(&text).with_context(|| format!("cannot parse h2load's output:\n{text}"))
}

/// The number of OK answers `target` has counted for the loaded method.
async fn ok_count(target: &Target) -> Result<u64> {
    match target.kind {
        Kind::Echo => {
            let mut client = EchoServiceClient::new(load::connect(&target.url).await?);
            Ok(client
                .served(ServedRequest {})
                .await
                .context("Served call to the echo server failed")?
                .into_inner()
                .echoes)
        }
        Kind::Tollgate => {
            let admin = target
                .admin
                .context("no admin address for Tollgate's metrics")?;
            Ok(ok_in_metrics(&scrape_metrics(admin).await?))
        }
    }
}

/// `GET /metrics` on Tollgate's admin listener.
pub async fn scrape_metrics(admin: SocketAddr) -> Result<String> {
    let answer = http1_get(admin, "/metrics", &[]).await?;
    if answer.status != 200 {
        bail!("GET /metrics answered {}", answer.status_line);
    }
    Ok(answer.body)
}

/// An HTTP/1.1 answer read by [`http1_get`].
#[derive(Debug, Clone)]
pub struct Http1Answer {
    /// The status code.
    pub status: u16,
    /// The whole status line, for messages.
    pub status_line: String,
    /// The header block after the status line, as sent.
    pub headers: String,
    /// The body, as sent (not de-chunked).
    pub body: String,
}

/// One `GET` over plain HTTP/1.1 with `Connection: close`, reading the
/// answer until the server closes. The bench needs nothing more than this
/// (a metrics scrape, a one-off check of a route), so it carries no HTTP
/// client.
pub async fn http1_get(addr: SocketAddr, path: &str, headers: &[String]) -> Result<Http1Answer> {
    http1_request(addr, "GET", path, headers, None).await
}

/// Like [`http1_get`], with any method and an optional body (sent with its
/// `Content-Length`), e.g. a one-off check of a form POST.
pub async fn http1_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&[u8]>,
) -> Result<Http1Answer> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    let what = format!("{method} {path}");
    stream
        .write_all(&bytes)
        .await
        .with_context(|| format!("cannot send {what}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .with_context(|| format!("cannot read the answer to {what}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed answer to {what}"))?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("malformed status line in the answer to {what}: {status_line}"))?;
    Ok(Http1Answer {
        status,
        status_line: status_line.to_owned(),
        headers: headers.to_owned(),
        body: body.to_owned(),
    })
}

/// Sums `tollgate_grpc_requests_total{code="OK"}` of GetOrganization in a
/// Prometheus text page (0 before the first call).
pub fn ok_in_metrics(page: &str) -> u64 {
    let method = format!("method=\"{GET_ORGANIZATION_PATH}\"");
    counter_sum(
        page,
        "tollgate_grpc_requests_total",
        &[&method, "code=\"OK\""],
    )
}

/// The sum of the Prometheus counter `name` over its series whose labels
/// include every one of `labels` (each written `key="value"`).
pub fn counter_sum(page: &str, name: &str, labels: &[&str]) -> u64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
                && labels.iter().all(|label| l.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The answered requests' durations in h2load's `--log-file` `log` (see
/// [`latencies_from_log`]); an error when it holds none.
pub fn read_latencies(log: &Path) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("cannot read h2load's log {}", log.display()))?;
    let latencies = latencies_from_log(&text)?;
    if latencies.is_empty() {
        bail!("h2load's log {} has no answered request", log.display());
    }
    Ok(latencies)
}

/// The durations of the answered requests in an h2load `--log-file`, in
/// microseconds, sorted; for percentiles, which h2load does not print.
///
/// Each line is tab-separated: start (µs since the epoch), HTTP status
/// (`-1` for a failed stream), µs from the request's start to the end of
/// its answer; h2load may add columns later, so extra ones are ignored.
/// Only 2xx answers count: failures are judged by [`check_http`], and a
/// failed stream's duration is not a latency.
pub fn latencies_from_log(log: &str) -> Result<Vec<u64>> {
    let mut durations = Vec::new();
    for (i, line) in log.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(_start), Some(status), Some(duration)) =
            (fields.next(), fields.next(), fields.next())
        else {
            bail!(
                "h2load log line {} has fewer than 3 columns: {line:?}",
                i + 1
            );
        };
        let status: i32 = status
            .trim()
            .parse()
            .with_context(|| format!("h2load log line {}: bad status {status:?}", i + 1))?;
        if (200..300).contains(&status) {
            durations.push(duration.trim().parse().with_context(|| {
                format!("h2load log line {}: bad duration {duration:?}", i + 1)
            })?);
        }
    }
    durations.sort_unstable();
    Ok(durations)
}

/// The `q` quantile (0 < q ≤ 1) of sorted values by nearest rank: the
/// smallest value with at least `q` of all values at or below it. None
/// when there are no values.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // Nearest rank is ceil(q·n), 1-based; clamp for q outside (0, 1].
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted.get(rank - 1).copied()
}

/// Parses the summary h2load prints at the end of a run.
pub fn parse(text: &str) -> Result<Summary> {
    let mut s = Summary::default();
    let mut seen = [false; 4];
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            let first = rest.split(',').next().unwrap_or("");
            s.elapsed = duration(first).context("bad 'finished in'")?;
            seen[0] = true;
        } else if let Some(rest) = line.strip_prefix("requests:") {
            let n = counts(rest);
            s.started = n("started")?;
            s.done = n("done")?;
            s.succeeded = n("succeeded")?;
            s.failed = n("failed")? + n("errored")? + n("timeout")?;
            seen[1] = true;
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            s.status_2xx = counts(rest)("2xx")?;
            seen[2] = true;
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            // min max mean sd +/-sd
            let fields: Vec<&str> = rest.split_whitespace().collect();
            s.max = fields.get(1).and_then(|f| duration(f)).context("bad max")?;
            s.mean = fields
                .get(2)
                .and_then(|f| duration(f))
                .context("bad mean")?;
            seen[3] = true;
        }
    }
    if seen.contains(&false) {
        bail!("h2load printed no complete summary");
    }
    Ok(s)
}

/// A reader of "N word, M word, ..." lists.
fn counts(list: &str) -> impl Fn(&str) -> Result<u64> + '_ {
    move |word| {
        list.split(',')
            .find_map(|item| {
                let (n, w) = item.trim().split_once(' ')?;
                (w == word).then(|| n.parse().ok()).flatten()
            })
            .with_context(|| format!("no '{word}' count"))
    }
}

/// An h2load duration: `12us`, `3.45ms`, `2.00s`.
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    Duration::try_from_secs_f64(number.parse::<f64>().ok()? * scale).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
finished in 2.00s, 23891.00 req/s, 3.37MB/s
requests: 47782 total, 47814 started, 47782 done, 47782 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 47782 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 6.74MB (7072304) total, 140.31KB (143674) headers (space savings 95.76%), 5.33MB (5590494) data
                     min         max         mean         sd        +/- sd
time for request:       43us     34.38ms      1.30ms      1.48ms    87.16%
time for connect:       54us       106us        84us        22us    75.00%
";

    #[test]
    fn parses_the_summary() {
        let s = parse(OUTPUT).unwrap();
        assert_eq!(s.elapsed, Duration::from_secs(2));
        assert_eq!(
            (s.started, s.done, s.succeeded, s.failed),
            (47814, 47782, 47782, 0)
        );
        assert_eq!(s.status_2xx, 47782);
        assert_eq!(s.mean, Duration::from_micros(1300));
        assert_eq!(s.max, Duration::from_micros(34380));
        assert!(parse("starting benchmark...\n").is_err());
    }

    /// The first lines of a real `--log-file` (Connect GET over h2c,
    /// `-c 4 -m 8`), plus a failed stream and a 404 made up in the same
    /// format, which must not count as latencies.
    const LOG: &str = "\
1795622222662232\t200\t1325
1795622222662227\t200\t1378
1795622222662227\t200\t1381
1795622222662301\t-1\t90000
1795622222662310\t404\t12
1795622222662390\t200\t87
";

    #[test]
    fn latencies_come_from_2xx_log_lines() {
        let d = latencies_from_log(LOG).unwrap();
        assert_eq!(d, vec![87, 1325, 1378, 1381]);
        assert_eq!(percentile(&d, 0.50), Some(1325));
        assert_eq!(percentile(&d, 0.99), Some(1381));
        assert_eq!(percentile(&d, 0.25), Some(87));
        assert_eq!(percentile(&[], 0.5), None);
        // A future fourth column is ignored; a short or garbled line fails.
        assert_eq!(latencies_from_log("1\t200\t5\t7\n").unwrap(), vec![5]);
        assert!(latencies_from_log("1\t200\n").is_err());
        assert!(latencies_from_log("1\t200\tfast\n").is_err());
        assert!(latencies_from_log("").unwrap().is_empty());
    }

    #[test]
    fn percentile_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.99), Some(7));
    }

    #[test]
    fn frames_a_message() {
        let body = GetOrganizationRequest {
            name: ORG_NAME.to_owned(),
        }
        .encode_to_vec();
        let frame = grpc_frame(&body).unwrap();
        assert_eq!(&frame[..5], &[0, 0, 0, 0, 20]);
        assert_eq!(&frame[5..7], &[0x0a, 18]);
        // The echo decodes the very same bytes.
        let echo = crate::echo::pb::EchoRequest::decode(&frame[5..]).unwrap();
        assert_eq!(echo.name, ORG_NAME);
    }

    #[test]
    fn counts_ok_answers_of_the_method() {
        let page = "\
# TYPE tollgate_grpc_requests_total counter
tollgate_grpc_requests_total{method=\"/tollgate.v1.OrganizationService/GetOrganization\",code=\"OK\"} 47795
tollgate_grpc_requests_total{method=\"/tollgate.v1.OrganizationService/GetOrganization\",code=\"UNKNOWN\"} 16
tollgate_grpc_requests_total{method=\"/grpc.health.v1.Health/Check\",code=\"OK\"} 3
";
        assert_eq!(ok_in_metrics(page), 47795);
        assert_eq!(ok_in_metrics(""), 0);
    }
}
