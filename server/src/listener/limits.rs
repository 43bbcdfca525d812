//! [`Limits`]: what one client may hold of a listener, and for how long.
//!
//! Every bound exists because the first hostile-client probe
//! (`security-probe-1.md`, D1 and D3) found it missing: unlimited streams
//! per connection, requests that wait forever for a body, connections that
//! are never reaped. The defaults keep a 2-core server answering under
//! those attacks while staying far above what a well-behaved client needs.

use std::time::Duration;

use anyhow::bail;

/// hyper refuses an HTTP/1.1 read buffer smaller than this (it panics), so
/// the HTTP/1.1 head limit is never set below it.
pub const MIN_HTTP1_BUFFER: usize = 8 * 1024;

/// The bounds a listener enforces on its clients. `Default` gives the
/// documented defaults; every field has a flag (see `config.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once. At the cap the listener stops accepting
    /// (new clients wait in the kernel's backlog) until one closes, and
    /// logs `connection limit reached` at most once per 10 s. Default
    /// 10,000: far above a proxy tier's needs, below a default fd limit
    /// raised for a server.
    pub max_connections: usize,
    /// Requests in flight at once on the whole listener; past it a new
    /// request is answered at once with RESOURCE_EXHAUSTED (or 503) and
    /// not served. The stream limit bounds one connection, this bounds
    /// them all: without it `max_connections` × `max_concurrent_streams`
    /// (a million) requests could each pin memory until their timeout.
    /// Default 10,000: some 100-200 MB of stalled calls at worst.
    pub max_requests_in_flight: usize,
    /// HTTP/2 streams one connection may have open, advertised in
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`. Default 100 (the value RFC 9113
    /// recommends as the least a server should allow): what pins memory
    /// per connection is at most this many requests.
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams a client may open and reset before the server has
    /// accepted them, before the connection is closed (the "rapid reset"
    /// attack, CVE-2023-44487). Default 20, h2's own.
    pub max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the server may reset because the client broke the
    /// protocol on them or opened more than `max_concurrent_streams`,
    /// before the connection is closed with a GOAWAY ("MadeYouReset",
    /// CVE-2025-8671). h2 counts them over the connection's whole life, so
    /// a long-lived, busy and correct client that sometimes races the
    /// stream limit adds up too: default 1024, h2's own.
    pub max_local_error_reset_streams: usize,
    /// The largest request head, in bytes: HTTP/2's
    /// `SETTINGS_MAX_HEADER_LIST_SIZE` and the HTTP/1.1 read buffer the
    /// request line and headers must fit in (never below 8 KiB, hyper's
    /// minimum). Default 16 KiB: a few kilobytes of tokens and metadata
    /// fit many times over.
    pub max_header_bytes: u32,
    /// How long a new connection has to deliver its first complete
    /// request head: TLS handshake, HTTP/2 preface and SETTINGS, HTTP/1.1
    /// headers. Then it is closed. Default 10 s.
    pub handshake_timeout: Duration,
    /// How long an HTTP/1.1 request head may take to arrive, once hyper
    /// starts reading it (slowloris); also ends HTTP/1.1 keep-alive
    /// connections idle that long. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight; then
    /// it is closed (HTTP/2 with a GOAWAY first). `None` keeps idle
    /// connections open. Default 120 s.
    pub idle_timeout: Option<Duration>,
    /// How often an HTTP/2 connection is pinged, so a peer that vanished
    /// without a FIN is noticed. `None` turns the pings off. Default 30 s.
    pub http2_keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    /// Default 20 s.
    pub http2_keepalive_timeout: Duration,
    /// How long a request may take to get its response head, and to finish
    /// sending its request body; a shorter `grpc-timeout` wins. Past it a
    /// gRPC call ends with DEADLINE_EXCEEDED and anything else gets a 504.
    /// A response that is streaming is not cut. `None` means no limit.
    /// Default 60 s.
    pub request_timeout: Option<Duration>,
    /// The largest request body, in bytes: gRPC's own default maximum
    /// message size (tonic decodes no more), exposed so other protocols on
    /// the port (HTTP/JSON) enforce the same figure. Default 4 MiB.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_requests_in_flight: 10_000,
            max_concurrent_streams: 100,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            max_header_bytes: 16 * 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(120)),
            http2_keepalive_interval: Some(Duration::from_secs(30)),
            http2_keepalive_timeout: Duration::from_secs(20),
            request_timeout: Some(Duration::from_secs(60)),
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The most connections [`Limits::max_connections`] may allow: the drain
/// at shutdown takes every permit at once, which tokio counts in a `u32`.
pub const MAX_CONNECTIONS: usize = 1_000_000;

impl Limits {
    /// Refuses values that would disable a bound by accident (a zero that
    /// means "close everything at once") or that hyper would panic on.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            bail!(
                "max_connections must be between 1 and {MAX_CONNECTIONS}, not {}",
                self.max_connections
            );
        }
        if self.max_requests_in_flight == 0 {
            bail!("max_requests_in_flight must be at least 1");
        }
        if self.max_concurrent_streams == 0 {
            bail!("max_concurrent_streams must be at least 1");
        }
        if self.max_header_bytes == 0 {
            bail!("max_header_bytes must be at least 1");
        }
        if self.max_body_bytes == 0 {
            bail!("max_body_bytes must be at least 1");
        }
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("http2_keepalive_timeout", self.http2_keepalive_timeout),
        ] {
            if value.is_zero() {
                bail!("{name} must be longer than 0");
            }
        }
        for (name, value) in [
            ("idle_timeout", self.idle_timeout),
            ("http2_keepalive_interval", self.http2_keepalive_interval),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_some_and(|v| v.is_zero()) {
                bail!("{name} must be longer than 0 (or unset, for none)");
            }
        }
        Ok(())
    }

    /// The HTTP/1.1 read buffer: the head limit, raised to hyper's minimum.
    pub fn http1_buffer(&self) -> usize {
        usize::try_from(self.max_header_bytes)
            .unwrap_or(usize::MAX)
            .max(MIN_HTTP1_BUFFER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_documented() {
        let d = Limits::default();
        d.validate().unwrap();
        assert_eq!(d.max_connections, 10_000);
        assert_eq!(d.max_concurrent_streams, 100);
        assert_eq!(d.max_header_bytes, 16 * 1024);
        assert_eq!(d.request_timeout, Some(Duration::from_secs(60)));
        assert_eq!(d.max_body_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn zeros_and_out_of_range_values_are_refused() {
        let bad = [
            Limits {
                max_connections: 0,
                ..Limits::default()
            },
            Limits {
                max_connections: MAX_CONNECTIONS + 1,
                ..Limits::default()
            },
            Limits {
                max_concurrent_streams: 0,
                ..Limits::default()
            },
            Limits {
                handshake_timeout: Duration::ZERO,
                ..Limits::default()
            },
            Limits {
                idle_timeout: Some(Duration::ZERO),
                ..Limits::default()
            },
        ];
        for limits in bad {
            assert!(limits.validate().is_err(), "{limits:?}");
        }
    }

    #[test]
    fn the_http1_buffer_never_goes_below_hypers_minimum() {
        let small = Limits {
            max_header_bytes: 1024,
            ..Limits::default()
        };
        assert_eq!(small.http1_buffer(), MIN_HTTP1_BUFFER);
        assert_eq!(Limits::default().http1_buffer(), 16 * 1024);
    }
}
