//! Server processes under test: spawning them, reading their memory, and
//! killing them however the bench ends.
//!
//! Both servers run as child processes so they never share a runtime, an
//! allocator or CPU accounting with the load generator, and so that what is
//! measured is what a user runs. [`ServerProcess`] is a drop guard: the
//! child is stopped and reaped when the guard goes out of scope, on success,
//! on `?` and on unwinding alike.

use std::{
    fs::File,
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// A running server process, killed when dropped.
pub struct ServerProcess {
    /// Which server this is, for error messages.
    name: &'static str,
    child: Child,
    /// Where the child's stderr goes: a file rather than a pipe, because an
    /// unread pipe fills up and would block a chatty server mid-benchmark.
    stderr_path: PathBuf,
    /// How long the child may take to exit after SIGTERM before SIGKILL.
    stop_grace: Duration,
}

// === impl ServerProcess ===

impl ServerProcess {
    /// Spawns `command` with stdin and stdout closed and stderr sent to
    /// `stderr_path`. When dropped, the child gets SIGTERM and `stop_grace`
    /// to exit (zero: SIGKILL at once).
    pub fn spawn(
        name: &'static str,
        command: Command,
        stderr_path: &Path,
        stop_grace: Duration,
    ) -> Result<Self> {
        Self::start(name, command, Stdio::null(), stderr_path, stop_grace)
    }

    /// [`ServerProcess::spawn`], with stdout sent to `stdout_path`: for a
    /// load generator whose report is its output.
    pub fn spawn_with_stdout(
        name: &'static str,
        command: Command,
        stdout_path: &Path,
        stderr_path: &Path,
        stop_grace: Duration,
    ) -> Result<Self> {
        let stdout = File::create(stdout_path)
            .with_context(|| format!("cannot create {}", stdout_path.display()))?;
        Self::start(name, command, stdout.into(), stderr_path, stop_grace)
    }

    fn start(
        name: &'static str,
        mut command: Command,
        stdout: Stdio,
        stderr_path: &Path,
        stop_grace: Duration,
    ) -> Result<Self> {
        let stderr = File::create(stderr_path)
            .with_context(|| format!("cannot create {}", stderr_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        Ok(Self {
            name,
            child,
            stderr_path: stderr_path.to_path_buf(),
            stop_grace,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the child has exited, with its status and the end of its
    /// stderr, so a server that cannot start is reported at once instead of
    /// as a readiness timeout.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited early ({status}); its stderr ends with:\n{}",
                self.name,
                self.stderr_tail()
            ),
            Err(e) => Err(e).with_context(|| format!("cannot poll {}", self.name)),
        }
    }

    /// The child's exit status if it has exited (and is now reaped), without
    /// waiting.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("cannot poll {}", self.name))
    }

    /// The last lines of the child's stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(20);
        lines[start..].join("\n")
    }

    /// Memory counters of the child from `/proc/PID/status`.
    pub fn memory(&self) -> Result<Memory> {
        Memory::of(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGTERM first, so a server run under a profiler (valgrind writes
        // its output at exit) shuts down cleanly; std only sends SIGKILL and
        // this crate forbids the unsafe a libc call needs, hence kill(1).
        // SIGKILL after the grace period, so dropping never hangs.
        if !self.stop_grace.is_zero() && matches!(self.child.try_wait(), Ok(None)) {
            let signalled = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if signalled {
                let deadline = Instant::now() + self.stop_grace;
                while Instant::now() < deadline {
                    if !matches!(self.child.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, in KiB as the kernel reports it.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak of `VmRSS` so far.
    pub peak_kib: u64,
    /// `RssAnon`: the part of `VmRSS` that is the process's own (heap,
    /// stacks); the rest is mapped files, chiefly the binary's code, which
    /// the kernel maps in large chunks around every page touched.
    pub anon_kib: u64,
}

// === impl Memory ===

impl Memory {
    /// Reads `VmRSS`, `VmHWM` and `RssAnon` from `/proc/PID/status`.
    pub fn of(pid: u32) -> Result<Memory> {
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |key: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {key} in {path}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:")?,
        })
    }
}

/// CPU time (user + system, all threads) a process has used so far, from
/// `/proc/PID/stat`. Its resolution is one clock tick (usually 10 ms), so
/// read it over windows of a second or more.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    stat_cpu_time(pid, false)
}

/// [`cpu_time`] plus the CPU time of the children the process has already
/// waited for (`cutime` + `cstime`): for the bench itself, this includes
/// each h2load run once it has been reaped.
pub fn cpu_time_with_children(pid: u32) -> Result<Duration> {
    stat_cpu_time(pid, true)
}

fn stat_cpu_time(pid: u32, children: bool) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // fields after it are plain. utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("unexpected {path}"))
    };
    let mut total = ticks(11)? + ticks(12)?;
    if children {
        total += ticks(13)? + ticks(14)?;
    }
    Ok(Duration::from_secs_f64(
        total as f64 / clock_ticks_per_second() as f64,
    ))
}

/// CPU time of the whole machine so far, from the first line of
/// `/proc/stat`: (busy, busy + idle), summed over all CPUs.
pub fn machine_cpu_time() -> Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("unexpected /proc/stat")?
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already
    // counted in user).
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let total = busy + at(3) + at(4);
    let secs = |t: u64| Duration::from_secs_f64(t as f64 / clock_ticks_per_second() as f64);
    Ok((secs(busy), secs(total)))
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once (this crate forbids the
/// unsafe a libc call needs); 100, the value on every common Linux, if
/// that fails.
fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// A loopback address with a port that was free a moment ago.
///
/// The port is found by binding port 0 and closing the socket, so another
/// process could take it before the server binds it; a server that then
/// fails to start says so through [`ServerProcess::ensure_running`].
pub fn free_local_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind a port")?;
    Ok(listener.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_counters() {
        let m = Memory::of(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.peak_kib >= m.rss_kib);
        let own = cpu_time(std::process::id()).unwrap();
        assert!(cpu_time_with_children(std::process::id()).unwrap() >= own);
        let (busy, total) = machine_cpu_time().unwrap();
        assert!(total >= busy && total > Duration::ZERO);
    }

    #[test]
    fn guard_stops_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut sleep = Command::new("sleep");
        sleep.arg("60");
        let mut guard = ServerProcess::spawn(
            "sleep",
            sleep,
            &dir.path().join("stderr"),
            Duration::from_secs(1),
        )
        .unwrap();
        guard.ensure_running().unwrap();
        let pid = guard.pid();
        drop(guard);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
