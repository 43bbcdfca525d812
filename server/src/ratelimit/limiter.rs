//! The decision for one call: which policies match, what each charges,
//! and which backend counts.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use http::HeaderValue;

use metrics::{Counter, counter};
use smallvec::SmallVec;

use super::{
    RedisLimiter,
    limit::{Algorithm, Charge, Decision, Limit},
    local::Local,
    rules::{Facts, Rule, RuleSet},
};

/// Limits that hold when no policy of the caller's organization matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Per source address, for anonymous callers of public methods.
    pub anonymous: Option<Limit>,
    /// Per principal, for authenticated callers.
    pub principal: Option<Limit>,
}

/// What one charge was for.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The deciding policy's resource name, or `default` for a limit from
    /// the configuration.
    pub policy: PolicyName,
    /// What was enforced.
    pub limit: Limit,
    /// The answer.
    pub decision: Decision,
    /// Counted and reported only.
    pub shadow: bool,
}

impl Outcome {
    /// Whether it refuses the call.
    pub fn refuses(&self) -> bool {
        !self.decision.allowed && !self.shadow
    }

    /// Whether it is a quota (a calendar window) rather than a rate.
    pub fn is_quota(&self) -> bool {
        matches!(self.limit.algorithm, Algorithm::Quota(_))
    }

    /// The header and metrics name of the policy: its final segment.
    pub fn short_name(&self) -> &str {
        self.policy.short_name()
    }
}

/// A policy's resource name as an outcome carries it: the handle the
/// plan already held, moved rather than cloned (every call of a policy
/// shares it, and each reference count taken is a cache line the cores
/// pass back and forth).
#[derive(Clone)]
pub struct PolicyName(Arc<PolicyHandle>);

impl PolicyName {
    /// The name's final segment, found when the handle was made: the
    /// `RateLimit` headers name it on every limited call.
    pub fn short_name(&self) -> &str {
        self.0.name.get(self.0.short..).unwrap_or(&self.0.name)
    }

    /// The `RateLimit-Policy` value of this policy enforcing `limit`,
    /// made when the rules were loaded.
    pub fn policy_value(&self, limit: &Limit) -> Option<&HeaderValue> {
        self.0
            .policy_values
            .iter()
            .find(|(made_for, _)| made_for == limit)
            .map(|(_, value)| value)
    }

    /// A name of a policy no rule set holds, for tests.
    #[cfg(test)]
    pub fn new(name: &str) -> Self {
        Self(Arc::new(PolicyHandle::new(name, [])))
    }
}

impl std::ops::Deref for PolicyName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0.name
    }
}

impl std::fmt::Debug for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0.name, f)
    }
}

impl std::fmt::Display for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.name)
    }
}

/// A verdict's outcomes.
pub type Outcomes = SmallVec<[Outcome; 1]>;

/// The decision for one call.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// One per charge: the enforced rate limit first (if any), then quotas,
    /// then shadow policies. Inline for one, as almost every call has.
    pub outcomes: Outcomes,
    /// A fail-closed policy could not be decided (Redis down): refuse with
    /// UNAVAILABLE, naming it.
    pub unavailable: Option<PolicyName>,
}

impl Verdict {
    /// Whether the call may go on.
    pub fn allowed(&self) -> bool {
        self.unavailable.is_none() && !self.outcomes.iter().any(Outcome::refuses)
    }

    /// The longest wait among refusing outcomes: when the call could fit.
    pub fn retry_after(&self) -> Option<Duration> {
        self.outcomes
            .iter()
            .filter(|o| o.refuses())
            .map(|o| o.decision.retry_after)
            .max()
    }
}

/// One charge to make, with what it is for.
struct Planned {
    /// Where its counter's key lies in [`Plan::keys`].
    key: std::ops::Range<usize>,
    limit: Limit,
    policy: Arc<PolicyHandle>,
    shadow: bool,
    fail_closed: bool,
}

/// The charges one call makes, owned, so a decision can be awaited
/// after the request has moved on. Inline for one charge, as almost
/// every call makes, and their keys written one after the other into
/// one buffer that the thread lends and gets back when the plan is
/// dropped: planning a call allocates nothing once the thread has
/// planned one.
#[derive(Default)]
pub struct Plan {
    charges: SmallVec<[Planned; 1]>,
    keys: String,
}

thread_local! {
    /// The key buffer of the thread's next plan.
    static KEYS: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

impl Drop for Plan {
    fn drop(&mut self) {
        let mut keys = std::mem::take(&mut self.keys);
        // A plan of many long keys leaves no large buffer behind; an
        // unlimited call's plan never borrowed one.
        if keys.capacity() != 0 && keys.capacity() <= 1024 {
            keys.clear();
            KEYS.set(keys);
        }
    }
}

impl Plan {
    /// Whether the call is charged nothing.
    pub fn is_empty(&self) -> bool {
        self.charges.is_empty()
    }

    /// Adds a charge whose key `write_key` writes.
    fn push(
        &mut self,
        limit: Limit,
        policy: &Arc<PolicyHandle>,
        (shadow, fail_closed): (bool, bool),
        write_key: impl FnOnce(&mut String),
    ) {
        if self.keys.capacity() == 0 {
            self.keys = KEYS.take();
        }
        let start = self.keys.len();
        // Room for a policy uid, the kind and a principal's or key's
        // resource name, so the usual key is written without growing.
        self.keys.reserve(160);
        write_key(&mut self.keys);
        self.charges.push(Planned {
            key: start..self.keys.len(),
            limit,
            policy: policy.clone(),
            shadow,
            fail_closed,
        });
    }

    fn key(&self, p: &Planned) -> &str {
        self.keys.get(p.key.clone()).unwrap_or_default()
    }

    fn charges(&self, cost: u64, dry_run: bool) -> Vec<Charge<'_>> {
        self.charges
            .iter()
            .map(|p| Charge {
                key: self.key(p),
                limit: &p.limit,
                cost,
                dry_run,
            })
            .collect()
    }

    /// The verdict of deciding each charge with `decide`, in order.
    fn decide_each(
        mut self,
        mut decide: impl FnMut(Charge<'_>) -> Decision,
        cost: u64,
        dry_run: bool,
    ) -> Verdict {
        let charges = std::mem::take(&mut self.charges);
        let outcomes = charges
            .into_iter()
            .map(|p| {
                let decision = decide(Charge {
                    key: self.key(&p),
                    limit: &p.limit,
                    cost,
                    dry_run,
                });
                p.outcome(decision)
            })
            .collect();
        Verdict {
            outcomes,
            unavailable: None,
        }
    }

    /// The verdict of `decisions`, one per charge in order (a shared
    /// store's answer to [`Plan::charges`]).
    fn verdict(mut self, decisions: Vec<Decision>) -> Verdict {
        let outcomes = std::mem::take(&mut self.charges)
            .into_iter()
            .zip(decisions)
            .map(|(p, decision)| p.outcome(decision))
            .collect();
        Verdict {
            outcomes,
            unavailable: None,
        }
    }
}

impl Planned {
    /// Counts `decision` in the policy's metrics and makes its outcome.
    fn outcome(self, decision: Decision) -> Outcome {
        self.policy.record(self.shadow, &decision);
        Outcome {
            policy: PolicyName(self.policy),
            limit: self.limit,
            decision,
            shadow: self.shadow,
        }
    }
}

/// A policy's name, its decision counters and its `RateLimit-Policy`
/// values, made once per rule set so the hot path neither formats labels
/// nor looks them up.
struct PolicyHandle {
    name: Arc<str>,
    /// Where the final segment of `name` starts.
    short: usize,
    allowed: Counter,
    refused: Counter,
    shadow_refused: Counter,
    /// The header value for each limit the policy enforces (its rate, its
    /// quota; the defaults' two).
    policy_values: Vec<(Limit, HeaderValue)>,
}

impl PolicyHandle {
    fn new(name: &str, limits: impl IntoIterator<Item = Limit>) -> Self {
        let c = |outcome: &'static str| counter!("tollgate_ratelimit_decisions_total", "policy" => name.to_owned(), "outcome" => outcome);
        let short = name.rfind('/').map_or(0, |i| i + 1);
        let short_name = name.get(short..).unwrap_or(name);
        Self {
            name: Arc::from(name),
            short,
            allowed: c("allowed"),
            refused: c("refused"),
            shadow_refused: c("shadow_refused"),
            policy_values: limits
                .into_iter()
                .filter_map(|l| Some((l, super::headers::policy_value(short_name, &l)?)))
                .collect(),
        }
    }

    fn record(&self, shadow: bool, decision: &Decision) {
        match (decision.allowed, shadow) {
            (true, _) => self.allowed.increment(1),
            (false, false) => self.refused.increment(1),
            (false, true) => self.shadow_refused.increment(1),
        }
    }
}

/// The rate limiter every call passes; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// Read on every call: an `ArcSwap`, whose loads take no lock and no
    /// shared reference count (a `RwLock` read is a write to the lock's
    /// cache line, which both cores then fight over).
    loaded: ArcSwap<Loaded>,
    local: Local,
    /// The store every replica shares, when configured.
    redis: Option<RedisLimiter>,
    fail_open: Counter,
    fail_closed: Counter,
    defaults: Defaults,
    default_handle: Arc<PolicyHandle>,
    /// The store's change generation the loaded rules reflect (see
    /// [`RateLimiter::wait_loaded`]).
    generation: tokio::sync::watch::Sender<u64>,
}

/// The policies in force: per organization each rule beside its handle
/// in matching order, so a call finds both in one lookup.
#[derive(Default)]
struct Loaded {
    by_org: std::collections::HashMap<Box<str>, Vec<Compiled>, foldhash::fast::RandomState>,
}

/// A rule and its handle.
struct Compiled {
    rule: Arc<Rule>,
    handle: Arc<PolicyHandle>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("defaults", &self.inner.defaults)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter holding at most `capacity` in-process counters, deciding
    /// on `redis` when given (the in-process counters then serve
    /// fail-open policies while Redis does not answer).
    pub fn new(defaults: Defaults, capacity: usize, redis: Option<RedisLimiter>) -> Self {
        Self {
            inner: Arc::new(Inner {
                loaded: ArcSwap::default(),
                local: Local::new(capacity),
                redis,
                fail_open: counter!("tollgate_ratelimit_store_failures_total", "applied" => "fail_open"),
                fail_closed: counter!("tollgate_ratelimit_store_failures_total", "applied" => "fail_closed"),
                defaults,
                default_handle: Arc::new(PolicyHandle::new(
                    "default",
                    defaults.principal.into_iter().chain(defaults.anonymous),
                )),
                generation: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// Records that the rules now loaded reflect every policy change up to
    /// the store's change generation `generation`.
    pub fn mark_loaded(&self, generation: u64) {
        self.inner.generation.send_if_modified(|g| {
            let newer = generation > *g;
            if newer {
                *g = generation;
            }
            newer
        });
    }

    /// Waits (at most `timeout`) until the loaded rules reflect the store's
    /// change generation `generation`: a policy write on this replica
    /// returns only once its calls are decided by it. `false` on timeout
    /// (the reload failed or is slow; the next one applies it).
    pub async fn wait_loaded(&self, generation: u64, timeout: std::time::Duration) -> bool {
        let mut loaded = self.inner.generation.subscribe();
        tokio::time::timeout(timeout, loaded.wait_for(|g| *g >= generation))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Replaces the policies; calls decided from now on see the new ones.
    pub fn set_rules(&self, rules: RuleSet) {
        let by_org = rules
            .into_orgs()
            .map(|(org, list)| {
                let compiled = list
                    .into_iter()
                    .map(|rule| Compiled {
                        handle: Arc::new(PolicyHandle::new(
                            &rule.name,
                            rule.limit.into_iter().chain(rule.quota),
                        )),
                        rule,
                    })
                    .collect();
                (org, compiled)
            })
            .collect();
        self.inner.loaded.store(Arc::new(Loaded { by_org }));
    }

    /// The in-process counters, for the sweeper and tests.
    pub fn local(&self) -> &Local {
        &self.inner.local
    }

    /// Whether decisions go to a shared store (and so must be awaited).
    pub fn is_shared(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// Decides a call of `cost` units (`dry_run`: without taking them),
    /// asking the shared store when there is one.
    pub async fn decide(&self, facts: &Facts<'_>, cost: u64, dry_run: bool) -> Verdict {
        let plan = self.plan(facts);
        self.execute(plan, cost, dry_run).await
    }

    /// Decides a call of `cost` units (`dry_run`: without taking them)
    /// on this replica's counters alone.
    pub fn check(&self, facts: &Facts<'_>, cost: u64, dry_run: bool) -> Verdict {
        self.execute_local(self.plan(facts), cost, dry_run)
    }

    /// Decides `plan` with the shared store when there is one; when it does
    /// not answer in time, fail-closed policies refuse (UNAVAILABLE) and
    /// the rest fall back to this replica's counters.
    pub async fn execute(&self, plan: Plan, cost: u64, dry_run: bool) -> Verdict {
        let Some(redis) = &self.inner.redis else {
            return self.execute_local(plan, cost, dry_run);
        };
        if plan.is_empty() {
            return Verdict::default();
        }
        let answer = redis.decide(&plan.charges(cost, dry_run)).await;
        match answer {
            Ok(decisions) => plan.verdict(decisions),
            Err(e) => {
                if let Some(closed) = plan.charges.iter().find(|p| p.fail_closed && !p.shadow) {
                    self.inner.fail_closed.increment(1);
                    tracing::debug!(error = %e, policy = %closed.policy.name, "rate-limit store unavailable; failing closed");
                    return Verdict {
                        outcomes: Outcomes::new(),
                        unavailable: Some(PolicyName(closed.policy.clone())),
                    };
                }
                self.inner.fail_open.increment(1);
                tracing::debug!(error = %e, "rate-limit store unavailable; deciding on local counters");
                self.execute_local(plan, cost, dry_run)
            }
        }
    }

    /// Decides `plan` on this replica's counters.
    pub fn execute_local(&self, plan: Plan, cost: u64, dry_run: bool) -> Verdict {
        if plan.is_empty() {
            return Verdict::default();
        }
        // One charge at a time, straight into the verdict: this runs on
        // every limited call, so no intermediate vectors.
        let now = super::local::now_us();
        let local = &self.inner.local;
        plan.decide_each(|charge| local.decide_one(&charge, now), cost, dry_run)
    }

    /// The charges a call makes: the most specific enforced rate limit
    /// that matches (or the configured default), every matching quota,
    /// and every matching shadow policy.
    pub fn plan(&self, facts: &Facts<'_>) -> Plan {
        let loaded = self.inner.loaded.load();
        let org = facts.org.or(facts.principal.map(|p| p.org.as_str()));
        let mut plan = Plan::default();
        let mut rate_found = false;
        if let Some(org) = org {
            for Compiled { rule, handle } in loaded.by_org.get(org).map_or(&[][..], Vec::as_slice) {
                if !rule.matches(facts) {
                    continue;
                }
                let flags = (rule.shadow, rule.fail_closed);
                if let Some(limit) = rule.limit
                    && (rule.shadow || !rate_found)
                {
                    rate_found |= !rule.shadow;
                    plan.push(limit, handle, flags, |key| rule_key(key, rule, facts, "r"));
                }
                if let Some(quota) = rule.quota {
                    plan.push(quota, handle, flags, |key| rule_key(key, rule, facts, "q"));
                }
            }
        }
        if !rate_found && facts.descriptors.is_none() {
            let defaults = &self.inner.defaults;
            let handle = &self.inner.default_handle;
            let flags = (false, false);
            match facts.principal {
                Some(p) => {
                    if let Some(limit) = defaults.principal {
                        plan.push(limit, handle, flags, |key| {
                            key.push_str("default:");
                            key.push_str(p.name());
                        });
                    }
                }
                None => {
                    if let Some(limit) = defaults.anonymous {
                        plan.push(limit, handle, flags, |key| {
                            use std::fmt::Write as _;
                            let _ = match facts.source {
                                Some(ip) => write!(key, "default:ip:{ip}"),
                                None => key.write_str("default:ip:unknown"),
                            };
                        });
                    }
                }
            }
        }
        // Enforced first, so headers and details lead with what decides.
        plan.charges
            .sort_by_key(|p| (p.shadow, matches!(p.limit.algorithm, Algorithm::Quota(_))));
        plan
    }
}

/// Writes the counter key of `rule` enforcing its rate (`kind` `r`) or
/// its quota (`q`) on the call of `facts`: `{uid}:{kind}:{partition}`.
fn rule_key(key: &mut String, rule: &Rule, facts: &Facts<'_>, kind: &str) {
    key.push_str(&rule.uid);
    key.push(':');
    key.push_str(kind);
    key.push(':');
    rule.partition(facts, key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rate_limit_policy::{
        FailureMode, KeyBy, PolicySpec, Quota, QuotaPeriod, Rate, RateAlgorithm, RatePeriod,
        Selector,
    };
    use crate::ratelimit::headers;

    fn rule(name: &str, rate: Option<Rate>, quota: Option<Quota>) -> Rule {
        Rule::compile(
            &format!("uid-{name}"),
            &format!("organizations/acme/rateLimitPolicies/{name}"),
            "acme",
            &PolicySpec {
                display_name: String::new(),
                selector: Selector::default(),
                rate,
                quota,
                algorithm: RateAlgorithm::Gcra,
                shadow: false,
                failure_mode: FailureMode::Open,
                key_by: KeyBy::Organization,
            },
        )
    }

    fn decide(limiter: &RateLimiter) -> Verdict {
        let facts = Facts {
            org: Some("acme"),
            principal: None,
            method: "/tollgate.v1.OrganizationService/GetOrganization",
            source: None,
            headers: None,
            descriptors: None,
        };
        limiter.check(&facts, 1, false)
    }

    #[test]
    fn a_policys_header_value_is_made_once_when_rules_load() {
        let limiter = RateLimiter::new(Defaults::default(), 1000, None);
        let rate = Rate {
            limit: 10,
            period: RatePeriod::Minute,
            burst: None,
        };
        limiter.set_rules(RuleSet::new([rule("api", Some(rate), None)]));
        let verdict = decide(&limiter);
        let (policy, state) = headers::values(&verdict).unwrap();
        assert_eq!(policy, "\"api\";q=10;w=60");
        assert_eq!(state, "\"api\";r=9;t=6");
        // The call's value is the loaded one, shared, not made again.
        let outcome = &verdict.outcomes[0];
        let made = outcome.policy.policy_value(&outcome.limit).unwrap();
        assert_eq!(policy.as_bytes().as_ptr(), made.as_bytes().as_ptr());

        // New rules, new values: the limit changed without a restart.
        let faster = Rate { limit: 20, ..rate };
        limiter.set_rules(RuleSet::new([rule("api", Some(faster), None)]));
        let (policy, _) = headers::values(&decide(&limiter)).unwrap();
        assert_eq!(policy, "\"api\";q=20;w=60");
    }

    #[test]
    fn a_rate_and_its_quota_are_listed_from_their_made_values() {
        let limiter = RateLimiter::new(Defaults::default(), 1000, None);
        limiter.set_rules(RuleSet::new([rule(
            "api",
            Some(Rate {
                limit: 5,
                period: RatePeriod::Second,
                burst: None,
            }),
            Some(Quota {
                limit: 1000,
                period: QuotaPeriod::Day,
            }),
        )]));
        let verdict = decide(&limiter);
        assert_eq!(verdict.outcomes.len(), 2);
        let (policy, state) = headers::values(&verdict).unwrap();
        assert_eq!(policy, "\"api\";q=5;w=1, \"api\";q=1000;w=86400");
        assert!(
            state
                .to_str()
                .unwrap()
                .starts_with("\"api\";r=4;t=1, \"api\";r=999;t=")
        );
    }

    #[test]
    fn the_defaults_header_values_are_made_at_start() {
        let limit = Limit {
            algorithm: Algorithm::Gcra,
            limit: 100,
            period: Duration::from_secs(1),
            burst: 200,
        };
        let limiter = RateLimiter::new(
            Defaults {
                anonymous: Some(limit),
                principal: None,
            },
            1000,
            None,
        );
        let facts = Facts {
            org: None,
            principal: None,
            method: "/grpc.health.v1.Health/Check",
            source: Some([127, 0, 0, 1].into()),
            headers: None,
            descriptors: None,
        };
        let verdict = limiter.check(&facts, 1, false);
        let (policy, _) = headers::values(&verdict).unwrap();
        assert_eq!(policy, "\"default\";q=100;w=1");
        let made = verdict.outcomes[0].policy.policy_value(&limit).unwrap();
        assert_eq!(policy.as_bytes().as_ptr(), made.as_bytes().as_ptr());
    }

    #[test]
    fn plans_write_keys_into_the_threads_reused_buffer() {
        let limiter = RateLimiter::new(Defaults::default(), 1000, None);
        let rate = Rate {
            limit: 5,
            period: RatePeriod::Second,
            burst: None,
        };
        let quota = Quota {
            limit: 9,
            period: QuotaPeriod::Month,
        };
        limiter.set_rules(RuleSet::new([rule("api", Some(rate), Some(quota))]));
        let facts = Facts {
            org: Some("acme"),
            principal: None,
            method: "/m",
            source: None,
            headers: None,
            descriptors: None,
        };
        let plan = limiter.plan(&facts);
        let keys: Vec<_> = plan.charges(1, false).iter().map(|c| c.key).collect();
        assert_eq!(keys, ["uid-api:r:org", "uid-api:q:org"]);
        let buffer = plan.keys.as_ptr();
        drop(plan);
        let plan = limiter.plan(&facts);
        assert_eq!(
            plan.keys.as_ptr(),
            buffer,
            "the dropped plan's buffer is lent again"
        );
        assert_eq!(plan.charges(1, false)[0].key, "uid-api:r:org");
        // A second plan alive at once gets a buffer of its own.
        let other = limiter.plan(&facts);
        assert_ne!(other.keys.as_ptr(), buffer);
        assert_eq!(other.charges(1, false)[1].key, "uid-api:q:org");
    }

    #[test]
    fn default_limits_key_by_principal_or_source_address() {
        let limit = Limit {
            algorithm: Algorithm::Gcra,
            limit: 1,
            period: Duration::from_secs(1),
            burst: 1,
        };
        let limiter = RateLimiter::new(
            Defaults {
                anonymous: Some(limit),
                principal: Some(limit),
            },
            1000,
            None,
        );
        let mut facts = Facts {
            org: None,
            principal: None,
            method: "/m",
            source: Some([10, 0, 0, 7].into()),
            headers: None,
            descriptors: None,
        };
        let key = |facts: &Facts<'_>| {
            let plan = limiter.plan(facts);
            let charges = plan.charges(1, false);
            assert_eq!(charges.len(), 1);
            charges[0].key.to_owned()
        };
        assert_eq!(key(&facts), "default:ip:10.0.0.7");
        facts.source = None;
        assert_eq!(key(&facts), "default:ip:unknown");
        let principal = crate::domain::authz::Principal::new(
            "acme".into(),
            crate::domain::names::PrincipalKind::User,
            "ann".into(),
            crate::domain::authz::Roles::new(Vec::new()),
        );
        facts.principal = Some(&principal);
        assert_eq!(key(&facts), "default:organizations/acme/users/ann");
    }
}
