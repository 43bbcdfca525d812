//! Starting the two servers and timing how long each takes to answer.
//!
//! "Ready" means the first moment a client gets a useful answer:
//! for Tollgate, `grpc.health.v1.Health/Check` returning SERVING (which it
//! does once its database answers); for the echo baseline, the first OK
//! `Echo`. The clock starts just before `spawn`, and the server is polled
//! every [`POLL`], reconnecting while the port is not yet open, so the
//! figure is process start-up plus, at most, one poll interval.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tonic::{Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    child::{ServerProcess, free_local_addr},
    echo::pb::{EchoRequest, echo_service_client::EchoServiceClient},
    load::ORG_NAME,
};

/// How often a starting server is polled.
pub const POLL: Duration = Duration::from_millis(2);

/// How to run and stop either server.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// A command to run the server under, e.g. `valgrind --tool=callgrind`.
    pub wrapper: Vec<String>,
    /// Time to exit after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

// === impl Launch ===

impl Launch {
    /// `bin`, or the wrapper with `bin` as its first argument.
    fn command(&self, bin: &Path) -> Command {
        match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }
}

/// How to run the Tollgate server.
#[derive(Debug, Clone)]
pub struct TollgateCommand {
    /// The `tollgate` binary.
    pub bin: PathBuf,
    /// Wrapper and stop grace.
    pub launch: Launch,
    /// `--log-level` for `tollgate serve`.
    pub log_level: String,
    /// More arguments for `tollgate serve`.
    pub extra_args: Vec<String>,
}

/// How to run the echo baseline.
#[derive(Debug, Clone)]
pub struct EchoCommand {
    /// This binary (it serves echo under a hidden subcommand).
    pub bin: PathBuf,
    /// Wrapper and stop grace.
    pub launch: Launch,
    /// Whether the echo server sets TCP_NODELAY on accepted sockets.
    pub tcp_nodelay: bool,
}

/// A server that answered, with what it needs to stay alive.
pub struct Started {
    /// The child process; killed when this is dropped.
    pub process: ServerProcess,
    /// `http://127.0.0.1:PORT` of its gRPC listener.
    pub url: String,
    /// Tollgate's admin listener (`/metrics`); none for the echo server.
    pub admin: Option<SocketAddr>,
    /// From just before spawn to the first useful answer.
    pub ready_after: Duration,
    /// Its data directory, deleted when this is dropped (after the process:
    /// fields drop in declaration order).
    pub dir: TempDir,
}

// === impl Started ===

impl Started {
    /// The admin API key Tollgate wrote on first start.
    pub async fn bootstrap_key(&self, timeout: Duration) -> Result<String> {
        let path = key_path(self.dir.path());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let key = text.trim();
                if !key.is_empty() {
                    return Ok(key.to_owned());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "tollgate did not write its bootstrap key to {}",
                    path.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join("key")
}

/// Starts `tollgate serve` on an empty temporary directory and waits until
/// its health check says SERVING.
pub async fn start_tollgate(cmd: &TollgateCommand, timeout: Duration) -> Result<Started> {
    let dir = tempfile::Builder::new()
        .prefix("tollgate-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    start_tollgate_in(cmd, timeout, dir).await
}

/// Stops `previous` (SIGTERM, then waits for it to exit) and starts
/// Tollgate again on its data directory: a restart, which finds the
/// database migrated and the keys made.
pub async fn restart_tollgate(
    previous: Started,
    cmd: &TollgateCommand,
    timeout: Duration,
) -> Result<Started> {
    let Started { process, dir, .. } = previous;
    drop(process);
    start_tollgate_in(cmd, timeout, dir).await
}

async fn start_tollgate_in(
    cmd: &TollgateCommand,
    timeout: Duration,
    dir: TempDir,
) -> Result<Started> {
    let listen = free_local_addr()?;
    let admin = free_local_addr()?;

    let mut command = cmd.launch.command(&cmd.bin);
    command
        .arg("serve")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--admin-listen")
        .arg(admin.to_string())
        .args(
            // The embedded database unless the caller names one.
            (!cmd.extra_args.iter().any(|a| a == "--database-url"))
                .then(|| {
                    [
                        "--database-url".to_owned(),
                        format!("sqlite://{}", dir.path().join("tollgate.db").display()),
                    ]
                })
                .into_iter()
                .flatten(),
        )
        .arg("--bootstrap-key-file")
        .arg(key_path(dir.path()))
        .arg("--log-level")
        .arg(&cmd.log_level)
        .args(&cmd.extra_args);

    let stderr = dir.path().join("stderr.log");
    let started = Instant::now();
    let mut process = ServerProcess::spawn("tollgate", command, &stderr, cmd.launch.stop_grace)?;
    let url = url_of(listen);
    let ready_after = wait_ready(&mut process, &url, started, timeout, health_serving).await?;
    Ok(Started {
        process,
        url,
        admin: Some(admin),
        ready_after,
        dir,
    })
}

/// Starts `tollgate-bench echo-server` and waits for its first OK call.
pub async fn start_echo(cmd: &EchoCommand, timeout: Duration) -> Result<Started> {
    let dir = tempfile::Builder::new()
        .prefix("tollgate-bench-echo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let listen = free_local_addr()?;
    let mut command = cmd.launch.command(&cmd.bin);
    command
        .arg("echo-server")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--tcp-nodelay")
        .arg(cmd.tcp_nodelay.to_string());

    let stderr = dir.path().join("stderr.log");
    let started = Instant::now();
    let mut process = ServerProcess::spawn("echo server", command, &stderr, cmd.launch.stop_grace)?;
    let url = url_of(listen);
    let ready_after = wait_ready(&mut process, &url, started, timeout, echo_ok).await?;
    Ok(Started {
        process,
        url,
        admin: None,
        ready_after,
        dir,
    })
}

fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Polls `probe` every [`POLL`] until it says ready, reconnecting while the
/// server is not listening yet or after a connection broke.
async fn wait_ready<F, Fut>(
    process: &mut ServerProcess,
    url: &str,
    started: Instant,
    timeout: Duration,
    probe: F,
) -> Result<Duration>
where
    F: Fn(Channel) -> Fut,
    Fut: Future<Output = Result<bool, Status>>,
{
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad url {url}"))?
        .connect_timeout(Duration::from_secs(1));
    let mut channel: Option<Channel> = None;
    loop {
        process.ensure_running()?;
        if started.elapsed() > timeout {
            bail!(
                "not ready after {timeout:?} at {url}; its stderr ends with:\n{}",
                process.stderr_tail()
            );
        }
        if channel.is_none() {
            channel = endpoint.connect().await.ok();
        }
        if let Some(ch) = &channel {
            match probe(ch.clone()).await {
                Ok(true) => return Ok(started.elapsed()),
                Ok(false) => {}
                // A transport failure shows up as UNAVAILABLE or UNKNOWN:
                // start over with a fresh connection.
                Err(_) => channel = None,
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn health_serving(channel: Channel) -> Result<bool, Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}

async fn echo_ok(channel: Channel) -> Result<bool, Status> {
    EchoServiceClient::new(channel)
        .echo(EchoRequest {
            name: ORG_NAME.to_owned(),
        })
        .await?;
    Ok(true)
}
