//! Webhook rules: which URLs an endpoint may have, which event types a
//! filter may name, and which addresses a delivery may connect to (SSRF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::{FieldViolation, Violations};
use crate::events::EventKind;

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2000;
/// The most event types one filter may list.
pub const MAX_EVENT_TYPES: usize = 50;

/// Which addresses deliveries may connect to. Everything public is; the
/// special-purpose ranges (loopback, private, link-local, shared, reserved,
/// multicast) are refused unless configured, since a webhook URL is chosen
/// by a tenant and must not reach the server's own network.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    allow_loopback: bool,
    allow_networks: Vec<IpNet>,
}

impl Targets {
    /// Loopback allowed (over `http` too) when `allow_loopback`; special
    /// addresses inside `allow_networks` allowed.
    pub fn new(allow_loopback: bool, allow_networks: Vec<IpNet>) -> Self {
        Self {
            allow_loopback,
            allow_networks,
        }
    }

    /// Whether `http` to loopback is allowed.
    pub fn allows_loopback(&self) -> bool {
        self.allow_loopback
    }

    /// `Ok` when a delivery may connect to `ip`, else why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = canonical(ip);
        let Some(kind) = special(ip) else {
            return Ok(());
        };
        if kind == "loopback" && self.allow_loopback {
            return Ok(());
        }
        if self.allow_networks.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        Err(format!(
            "address {ip} is {kind}; allow it with --webhook-allow-networks"
        ))
    }
}

/// An IPv4-mapped or IPv4-compatible IPv6 address as the IPv4 address it
/// reaches, so `::ffff:127.0.0.1` is judged as loopback.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// What kind of special-purpose address `ip` is (IANA's registries), or
/// `None` for a public one.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (carrier-grade NAT)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified (this network)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast, broadcast or reserved")
    } else if (a == 192 && b == 0 && c == 0) || (a == 198 && (18..20).contains(&b)) {
        Some("reserved for protocol assignments or benchmarking")
    } else if ip.is_documentation() {
        Some("reserved for documentation")
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xff00 == 0xff00 {
        Some("multicast")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("reserved for documentation")
    } else if first == 0x0064 && ip.segments()[1] == 0xff9b {
        // NAT64 reaches IPv4 addresses, private ones included.
        Some("NAT64 (IPv4-embedded)")
    } else {
        None
    }
}

/// Checks a webhook URL: absolute `https` without user information or
/// fragment; `http` only to a loopback host when `targets` allows
/// loopback. An IP-literal host is checked against `targets` now; a name
/// is checked at every delivery, on what it resolves to.
pub fn url(field: &str, url: &str, targets: &Targets) -> Result<String, FieldViolation> {
    let bad = |why: &str| FieldViolation::new(field, why);
    if url.is_empty() {
        return Err(bad("required"));
    }
    if url.len() > MAX_URL_LEN {
        return Err(bad(&format!("must be at most {MAX_URL_LEN} characters")));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    if url.contains('#') {
        return Err(bad("must not contain a fragment"));
    }
    let parsed: http::Uri = url.parse().map_err(|_| bad("is not an absolute URL"))?;
    let (Some(scheme), Some(authority)) = (parsed.scheme_str(), parsed.authority()) else {
        return Err(bad("must be an absolute URL with a host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad("must not contain user information"));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(bad("must be an absolute URL with a host"));
    }
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || literal.is_some_and(|ip| canonical(ip).is_loopback());
    match scheme {
        "https" => {}
        "http" if loopback && targets.allows_loopback() => {}
        "http" if loopback => {
            return Err(bad(
                "http is allowed only to loopback, and only when the server runs with --webhook-allow-loopback; use https",
            ));
        }
        "http" => return Err(bad("must be https")),
        _ => return Err(bad("must be an https URL")),
    }
    if let Some(ip) = literal {
        targets.check(ip).map_err(|why| bad(&why))?;
    }
    Ok(url.to_owned())
}

/// The resource prefixes of the event types (`user` of `user.created`).
fn resources() -> impl Iterator<Item = &'static str> {
    EventKind::ALL
        .into_iter()
        .filter_map(|k| k.as_str().split_once('.').map(|(r, _)| r))
}

/// Checks an event-type filter: known types, `resource.*` for a known
/// resource, or `*`. Returns the entries deduplicated; a filter holding
/// `*` is just `*`; empty means every event.
pub fn event_types(v: &mut Violations, field: &str, types: &[String]) -> Vec<String> {
    if types.len() > MAX_EVENT_TYPES {
        v.add(field, format!("at most {MAX_EVENT_TYPES} event types"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for (i, t) in types.iter().enumerate() {
        let known = t == "*"
            || EventKind::ALL.iter().any(|k| k.as_str() == t)
            || t.strip_suffix(".*")
                .is_some_and(|r| resources().any(|known| known == r));
        if !known {
            v.add(
                format!("{field}[{i}]"),
                format!(
                    "'{}' is not an event type: expected a type such as user.created, a resource's every change such as user.*, or *",
                    t.chars().take(100).collect::<String>()
                ),
            );
        } else if !out.contains(t) {
            out.push(t.clone());
        }
    }
    if out.iter().any(|t| t == "*") {
        return vec!["*".to_owned()];
    }
    out
}

/// Whether a stored filter (space-separated, empty for every event)
/// matches `event_type`.
pub fn matches(filter: &str, event_type: &str) -> bool {
    let mut any = false;
    for t in filter.split(' ').filter(|t| !t.is_empty()) {
        any = true;
        if t == "*" || t == event_type {
            return true;
        }
        if let Some(resource) = t.strip_suffix(".*")
            && event_type
                .strip_prefix(resource)
                .is_some_and(|rest| rest.starts_with('.'))
        {
            return true;
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused_unless_allowed() {
        let strict = Targets::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(strict.check(ip).is_err(), "{ip} should be refused");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert!(strict.check(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        let loopback = Targets::new(true, Vec::new());
        assert!(loopback.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(loopback.check("::1".parse().unwrap()).is_ok());
        assert!(loopback.check("10.0.0.1".parse().unwrap()).is_err());
        let net = Targets::new(false, vec!["10.20.0.0/16".parse().unwrap()]);
        assert!(net.check("10.20.3.4".parse().unwrap()).is_ok());
        assert!(net.check("10.21.3.4".parse().unwrap()).is_err());
        assert!(net.check("127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn urls_must_be_https_unless_loopback_is_allowed() {
        let strict = Targets::default();
        let dev = Targets::new(true, Vec::new());
        assert!(url("u", "https://hooks.example.com/in", &strict).is_ok());
        for bad in [
            "",
            "http://hooks.example.com/in",
            "ftp://hooks.example.com/in",
            "https://user:pw@hooks.example.com/in",
            "https://hooks.example.com/in#frag",
            "/relative",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/in",
            "https://[::1]/in",
            "http://127.0.0.1:8080/in",
            "http://localhost/in",
        ] {
            assert!(url("u", bad, &strict).is_err(), "{bad}");
        }
        assert!(url("u", "http://127.0.0.1:8080/in", &dev).is_ok());
        assert!(url("u", "http://[::1]:8080/in", &dev).is_ok());
        assert!(url("u", "http://localhost:8080/in", &dev).is_ok());
        assert!(url("u", "http://hooks.example.com/in", &dev).is_err());
        assert!(url("u", "https://10.0.0.1/in", &dev).is_err());
    }

    #[test]
    fn event_type_filters() {
        let mut v = Violations::default();
        let t = event_types(
            &mut v,
            "f",
            &[
                "user.created".into(),
                "apiKey.*".into(),
                "user.created".into(),
            ],
        );
        assert!(std::mem::take(&mut v).into_result().is_ok());
        assert_eq!(t, ["user.created", "apiKey.*"]);
        let t = event_types(&mut v, "f", &["user.*".into(), "*".into()]);
        assert_eq!(t, ["*"]);
        for bad in ["user.create", "nothing.*", "user", "user.**", ""] {
            let mut v = Violations::default();
            event_types(&mut v, "f", &[bad.into()]);
            assert!(v.into_result().is_err(), "{bad}");
        }
        assert!(matches("", "user.created"));
        assert!(matches("*", "user.created"));
        assert!(matches("user.* apiKey.created", "user.deleted"));
        assert!(matches("user.* apiKey.created", "apiKey.created"));
        assert!(!matches("user.* apiKey.created", "apiKey.revoked"));
        assert!(!matches("user.*", "userX.created"));
    }
}
