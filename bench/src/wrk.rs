//! The HTTP/1.1 load generator: `wrk` (Debian package `wrk`), a small C
//! client that keeps its connections alive and has one request in flight
//! per connection, as HTTP/1.1 without pipelining does.
//!
//! h2load speaks only HTTP/2 (and HTTP/3), so the HTTP/1.1 keep-alive leg
//! of the transcoding benchmark needs another generator. wrk is light like
//! h2load (one thread, epoll, no per-call allocation to speak of), keeps
//! its own latency histogram and prints percentiles with `--latency`.
//!
//! wrk counts an answer as a success when its status is below 400, and it
//! exits 0 even when every answer was an error; so the run's summary is
//! parsed and [`check`] fails it on any non-2xx/3xx answer or socket error
//! (3xx answers, which wrk does not report apart, are caught by the
//! server's OK count, which the caller checks).

use std::{
    path::PathBuf,
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::child::ServerProcess;

/// How wrk loads a server.
#[derive(Debug, Clone)]
pub struct WrkSettings {
    /// The `wrk` executable.
    pub bin: PathBuf,
    /// `-c`: connections, each with one request in flight.
    pub connections: usize,
    /// `-t`: threads (one is plenty on two cores).
    pub threads: usize,
}

/// What wrk printed for one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkSummary {
    /// Answers read (`N requests in …`), errors included.
    pub requests: u64,
    /// The length of the run (`… in 2.01s`).
    pub elapsed: Duration,
    /// `Requests/sec`: `requests` over the exact length of the run.
    pub requests_per_sec: f64,
    /// `Latency` mean from the thread stats.
    pub mean: Duration,
    /// `Latency` max from the thread stats.
    pub max: Duration,
    /// The `50%` line of `--latency`.
    pub p50: Duration,
    /// The `90%` line of `--latency`.
    pub p90: Duration,
    /// The `99%` line of `--latency`.
    pub p99: Duration,
    /// `Non-2xx or 3xx responses` (the line is absent when there are none).
    pub non_2xx_3xx: u64,
    /// `Socket errors`: connect + read + write + timeout (absent: none).
    pub socket_errors: u64,
}

/// Runs wrk once for `duration` (whole seconds: wrk takes no fractions) on
/// `url` with `headers` (`name: value` each), and parses its summary.
/// `name` labels errors. The process runs under a [`ServerProcess`] guard,
/// so an interrupted bench kills it too.
pub async fn run(
    name: &str,
    settings: &WrkSettings,
    url: &str,
    headers: &[String],
    duration: Duration,
) -> Result<WrkSummary> {
    let dir = tempfile::Builder::new()
        .prefix("tollgate-bench-wrk-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let stdout = dir.path().join("stdout.log");
    let stderr = dir.path().join("stderr.log");
    let mut command = Command::new(&settings.bin);
    command
        .arg("-c")
        .arg(settings.connections.to_string())
        .arg("-t")
        .arg(settings.threads.to_string())
        .arg("-d")
        .arg(format!("{}s", duration.as_secs().max(1)))
        .arg("--latency");
    for header in headers {
        command.arg("-H").arg(header);
    }
    command.arg(url);

    let mut process =
        ServerProcess::spawn_with_stdout("wrk", command, &stdout, &stderr, Duration::ZERO)
            .with_context(|| {
                format!(
                    "cannot run {}; install it with `apt-get install wrk` (see `just peers`)",
                    settings.bin.display()
                )
            })?;
    let status: ExitStatus = loop {
        if let Some(status) = process.try_exit()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let text = std::fs::read_to_string(&stdout).context("cannot read wrk's output")?;
    if !status.success() {
        bail!(
            "wrk failed ({status}) on {name}; its stderr ends with:\n{}\n{}",
            process.stderr_tail(),
            text
        );
    }
    parse(&text).with_context(|| format!("cannot parse wrk's output:\n{text}"))
}

/// Fails unless the run had answers and none of them was an error.
pub fn check(name: &str, s: &WrkSummary) -> Result<()> {
    if s.requests == 0 || s.non_2xx_3xx > 0 || s.socket_errors > 0 {
        bail!(
            "{name}: wrk got {} answers, {} of them neither 2xx nor 3xx, and {} socket errors; \
             the figures are not valid",
            s.requests,
            s.non_2xx_3xx,
            s.socket_errors
        );
    }
    Ok(())
}

/// Parses the summary wrk prints at the end of a run with `--latency`.
pub fn parse(text: &str) -> Result<WrkSummary> {
    let mut s = WrkSummary::default();
    // Latency stats, the three percentiles, requests, Requests/sec.
    let mut seen = [false; 6];
    for line in text.lines().map(str::trim) {
        if line == "Latency Distribution" {
            // The heading of the percentiles that follow.
        } else if let Some(rest) = line.strip_prefix("Latency ") {
            // avg stdev max +/-stdev
            let fields: Vec<&str> = rest.split_whitespace().collect();
            s.mean = fields
                .first()
                .and_then(|f| duration(f))
                .context("bad mean")?;
            s.max = fields.get(2).and_then(|f| duration(f)).context("bad max")?;
            seen[0] = true;
        } else if let Some(rest) = line.strip_prefix("50%") {
            s.p50 = duration(rest).context("bad 50%")?;
            seen[1] = true;
        } else if let Some(rest) = line.strip_prefix("90%") {
            s.p90 = duration(rest).context("bad 90%")?;
            seen[2] = true;
        } else if let Some(rest) = line.strip_prefix("99%") {
            s.p99 = duration(rest).context("bad 99%")?;
            seen[3] = true;
        } else if let Some((count, rest)) = line.split_once(" requests in ") {
            s.requests = count.parse().context("bad request count")?;
            let elapsed = rest.split(',').next().unwrap_or("");
            s.elapsed = duration(elapsed).context("bad run length")?;
            seen[4] = true;
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            s.requests_per_sec = rest.trim().parse().context("bad Requests/sec")?;
            seen[5] = true;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            s.non_2xx_3xx = rest.trim().parse().context("bad Non-2xx count")?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 8633, write 0, timeout 0"
            for item in rest.split(',') {
                let n = item
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                    .with_context(|| format!("bad socket error count {item:?}"))?;
                s.socket_errors += n;
            }
        }
    }
    if seen.contains(&false) {
        bail!("wrk printed no complete summary (was it run with --latency?)");
    }
    Ok(s)
}

/// A wrk duration: `560.00us`, `1.03ms`, `2.01s`, `1.00m`, `1.00h`.
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return None;
    };
    Duration::try_from_secs_f64(number.parse::<f64>().ok()? * scale).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured: `wrk -c 16 -t 1 -d 2s --latency` on a Connect GET of
    /// GetOrganization, all answers 200.
    const OK: &str = "\
Running 2s test @ http://127.0.0.1:18080/tollgate.v1.OrganizationService/GetOrganization?encoding=json&message=%7B%22name%22%3A%22organizations%2Froot%22%7D
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms    1.09ms   7.29ms   86.12%
    Req/Sec    20.42k     2.30k   26.95k    80.00%
  Latency Distribution
     50%  560.00us
     75%    1.03ms
     90%    2.66ms
     99%    5.08ms
  40739 requests in 2.01s, 14.96MB read
Requests/sec:  20294.53
Transfer/sec:      7.45MB
";

    /// Captured: the same call with a wrong key; every answer is a 401 and
    /// wrk still exits 0.
    const NON_2XX: &str = "\
Running 1s test @ http://127.0.0.1:18080/tollgate.v1.OrganizationService/GetOrganization?encoding=json&message=%7B%22name%22%3A%22organizations%2Froot%22%7D
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   169.21us  367.96us   5.10ms   97.60%
    Req/Sec    30.47k     1.59k   31.44k    80.00%
  Latency Distribution
     50%  110.00us
     75%  142.00us
     90%  180.00us
     99%    2.34ms
  30286 requests in 1.00s, 12.25MB read
  Non-2xx or 3xx responses: 30286
Requests/sec:  30275.31
Transfer/sec:     12.24MB
";

    /// Captured: a server that closes every connection after one answer.
    const SOCKET_ERRORS: &str = "\
Running 1s test @ http://127.0.0.1:18998/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   645.94us    1.16ms   8.63ms   85.44%
    Req/Sec     8.67k     2.53k   13.81k    80.00%
  Latency Distribution
     50%   61.00us
     75%  774.00us
     90%    2.37ms
     99%    5.06ms
  8633 requests in 1.01s, 337.23KB read
  Socket errors: connect 0, read 8633, write 0, timeout 0
Requests/sec:   8588.96
Transfer/sec:    335.51KB
";

    #[test]
    fn parses_a_clean_run() {
        let s = parse(OK).unwrap();
        assert_eq!(s.requests, 40739);
        assert_eq!(s.elapsed, Duration::from_millis(2010));
        assert_eq!(s.requests_per_sec, 20294.53);
        assert_eq!(s.mean, Duration::from_micros(1020));
        assert_eq!(s.max, Duration::from_micros(7290));
        assert_eq!(s.p50, Duration::from_micros(560));
        assert_eq!(s.p90, Duration::from_micros(2660));
        assert_eq!(s.p99, Duration::from_micros(5080));
        assert_eq!((s.non_2xx_3xx, s.socket_errors), (0, 0));
        check("ok", &s).unwrap();
    }

    #[test]
    fn errors_fail_the_run() {
        let s = parse(NON_2XX).unwrap();
        assert_eq!((s.requests, s.non_2xx_3xx), (30286, 30286));
        assert!(check("401", &s).is_err());

        let s = parse(SOCKET_ERRORS).unwrap();
        assert_eq!((s.requests, s.socket_errors), (8633, 8633));
        assert_eq!(s.p50, Duration::from_micros(61));
        assert!(check("closed", &s).is_err());
    }

    #[test]
    fn incomplete_output_is_an_error() {
        // Without --latency there are no percentiles.
        let without_latency: String = OK
            .lines()
            .filter(|l| {
                !l.trim_start()
                    .starts_with(|c: char| c.is_ascii_digit() && l.contains('%'))
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse(&without_latency).is_err());
        assert!(parse("unable to connect to 127.0.0.1:18999 Connection refused\n").is_err());
    }

    #[test]
    fn reads_durations() {
        assert_eq!(duration("87.00us"), Some(Duration::from_micros(87)));
        assert_eq!(duration(" 8.62ms"), Some(Duration::from_micros(8620)));
        assert_eq!(duration("1.00m"), Some(Duration::from_secs(60)));
        assert_eq!(duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(duration("fast"), None);
    }
}
