//! The measurement window of one measured run, shared by the suites that
//! drive one Tollgate server with an external generator (`transcoding`,
//! `oauth`): the server's OK count, its CPU time and the machine's, read
//! around the run.

use std::{net::SocketAddr, time::Duration};

use anyhow::Result;

use crate::{
    child::{cpu_time, cpu_time_with_children, machine_cpu_time},
    h2load,
};

/// Counters read before a measured run, closed into [`Usage`] after it.
pub struct Window {
    /// The server's OK count.
    ok: u64,
    /// The machine's busy and total CPU time.
    busy: Duration,
    total: Duration,
    /// The server's CPU time.
    server: Duration,
    /// The bench's CPU time, with its reaped children.
    bench: Duration,
}

/// What the server and the machine did during a measured run.
pub struct Usage {
    /// How much the server's OK count grew.
    pub server_ok: u64,
    /// The server's CPU time.
    pub server_cpu: Duration,
    /// Share of the machine other processes used.
    pub other_load: f64,
}

// === impl Window ===

impl Window {
    /// Reads the OK count first and the CPU counters last, so the scrape's
    /// own cost stays outside the window. `pid` is the server's process,
    /// `admin` its admin listener.
    pub async fn open(pid: u32, admin: SocketAddr) -> Result<Self> {
        let ok = ok_count(admin).await?;
        let (busy, total) = machine_cpu_time()?;
        Ok(Self {
            ok,
            busy,
            total,
            server: cpu_time(pid)?,
            // With children: the generator is reaped before the window
            // closes, so its CPU time lands here and is not "other load".
            bench: cpu_time_with_children(std::process::id())?,
        })
    }

    /// Reads the CPU counters first and the OK count last (the mirror of
    /// [`Window::open`]).
    pub async fn close(self, pid: u32, admin: SocketAddr) -> Result<Usage> {
        let server_cpu = cpu_time(pid)?.saturating_sub(self.server);
        let bench = cpu_time_with_children(std::process::id())?.saturating_sub(self.bench);
        let (busy, total) = machine_cpu_time()?;
        let ok = ok_count(admin).await?;
        let busy = busy.saturating_sub(self.busy);
        let capacity = total.saturating_sub(self.total);
        Ok(Usage {
            server_ok: ok.saturating_sub(self.ok),
            server_cpu,
            other_load: busy.saturating_sub(server_cpu + bench).as_secs_f64()
                / capacity.as_secs_f64().max(f64::MIN_POSITIVE),
        })
    }
}

/// The server's count of OK GetOrganization answers.
pub async fn ok_count(admin: SocketAddr) -> Result<u64> {
    Ok(h2load::ok_in_metrics(&h2load::scrape_metrics(admin).await?))
}
