//! Policies compiled for matching: per organization, most specific first.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use http::HeaderMap;

use crate::domain::authz::Principal;

pub use crate::domain::rate_limit_policy::{KeyBy, MethodMatch, RateLimitRule as Rule};

/// What is known of one call, for matching and keys.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The organization whose policies decide.
    pub org: Option<&'a str>,
    /// The caller, when authenticated.
    pub principal: Option<&'a Principal>,
    /// The method path; empty for descriptor requests.
    pub method: &'a str,
    /// The caller's address.
    pub source: Option<IpAddr>,
    /// Request headers (HTTP or gRPC metadata).
    pub headers: Option<&'a HeaderMap>,
    /// Descriptor entries (Envoy's RLS and CheckRateLimit), in order.
    pub descriptors: Option<&'a [(&'a str, &'a str)]>,
}

impl Rule {
    /// Whether the rule applies to the call.
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        // Descriptor requests and calls are told apart: a descriptor
        // policy never limits calls, nor a call policy descriptors.
        if self.descriptors.is_empty() == facts.descriptors.is_some() {
            return false;
        }
        if !self.method.matches(facts.method) {
            return false;
        }
        let principal = facts.principal;
        if let Some(p) = &self.principal
            && principal.is_none_or(|c| c.name() != p.as_ref())
        {
            return false;
        }
        if let Some(k) = &self.api_key
            && principal.and_then(|c| c.credential.api_key()) != Some(k.as_ref())
        {
            return false;
        }
        if let Some(c) = &self.oauth_client
            && principal.and_then(|p| p.credential.oauth_client()) != Some(c.as_ref())
        {
            return false;
        }
        for (name, value) in &self.headers {
            let Some(found) = facts.headers.and_then(|h| h.get(name.as_ref())) else {
                return false;
            };
            if let Some(v) = value
                && found.as_bytes() != v.as_bytes()
            {
                return false;
            }
        }
        if let Some(entries) = facts.descriptors {
            for (key, value) in &self.descriptors {
                let Some((_, found)) = entries.iter().find(|(k, _)| *k == key.as_ref()) else {
                    return false;
                };
                if value.as_deref().is_some_and(|v| v != *found) {
                    return false;
                }
            }
        }
        true
    }

    /// The counter's partition for this call: whose share of the policy
    /// it is.
    pub fn partition(&self, facts: &Facts<'_>, out: &mut String) {
        use std::fmt::Write as _;
        let ip = |out: &mut String| match facts.source {
            Some(ip) => {
                let _ = write!(out, "ip:{ip}");
            }
            None => out.push_str("ip:unknown"),
        };
        match (self.key_by, facts.principal) {
            (KeyBy::Organization, _) => out.push_str("org"),
            (KeyBy::SourceAddress, _) => ip(out),
            (KeyBy::Credential, Some(p)) => out.push_str(p.credential.name().unwrap_or(p.name())),
            (KeyBy::Principal, Some(p)) => out.push_str(p.name()),
            (KeyBy::Principal | KeyBy::Credential, None) => ip(out),
            (KeyBy::Descriptor, _) => {
                for (name, _) in &self.headers {
                    out.push_str(name);
                    out.push('=');
                    if let Some(v) = facts.headers.and_then(|h| h.get(name.as_ref())) {
                        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    out.push('\u{1f}');
                }
                if let Some(entries) = facts.descriptors {
                    for (key, _) in &self.descriptors {
                        if let Some((k, v)) = entries.iter().find(|(k, _)| *k == key.as_ref()) {
                            out.push_str(k);
                            out.push('=');
                            out.push_str(v);
                            out.push('\u{1f}');
                        }
                    }
                }
            }
        }
    }
}

/// Every organization's rules, most specific first.
#[derive(Debug, Default)]
pub struct RuleSet {
    by_org: HashMap<Box<str>, Vec<Arc<Rule>>, foldhash::fast::RandomState>,
}

impl RuleSet {
    /// Compiles `rules` into per-organization lists in matching order.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Self {
        let mut by_org: HashMap<Box<str>, Vec<Arc<Rule>>, _> = HashMap::default();
        for rule in rules {
            by_org
                .entry(rule.org.clone())
                .or_default()
                .push(Arc::new(rule));
        }
        for list in by_org.values_mut() {
            list.sort_by(|a, b| {
                b.specificity()
                    .cmp(&a.specificity())
                    .then_with(|| a.name.cmp(&b.name))
            });
        }
        Self { by_org }
    }

    /// Each organization's id and rules, most specific first.
    pub fn into_orgs(self) -> impl Iterator<Item = (Box<str>, Vec<Arc<Rule>>)> {
        self.by_org.into_iter()
    }
}
