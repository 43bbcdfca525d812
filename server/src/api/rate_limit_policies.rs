//! `tollgate.v1.RateLimitPolicyService`: policies as data. Enforcement
//! reads them through `Store::all_rules`; this module only manages them.

use std::{collections::HashSet, sync::Arc};

use tollgate::tollgate::v1::{
    CreateRateLimitPolicyRequest, DeleteRateLimitPolicyRequest, GetRateLimitPolicyRequest,
    ListRateLimitPoliciesRequest, ListRateLimitPoliciesResponse, RateLimitPolicy,
    RateLimitSelector, UpdateRateLimitPolicyRequest,
    rate_limit_policy_service_server::RateLimitPolicyService,
};
use tonic::{Request, Response, Status};

use super::{caller, list_params};
use crate::{
    domain::{
        Error, Violations, mask,
        names::{OrgName, RateLimitPolicyName, generate_id, validate_user_id},
        rate_limit_policy::{
            self as rules, FailureMode, KeyBy, PolicySpec, Quota, Rate, RateAlgorithm, Selector,
            SelectorInput,
        },
    },
    ratelimit::RateLimiter,
    store::{
        Store,
        rate_limit_policies::{NewRateLimitPolicy, RateLimitPolicyChanges},
    },
};

const MUTABLE: &[&str] = &[
    "display_name",
    "selector",
    "limit",
    "quota",
    "algorithm",
    "shadow",
    "failure_mode",
    "key_by",
];

const FIELD: &str = "rate_limit_policy";

/// The longest a policy write waits for this replica's engine to apply it.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn parse_name(field: &str, name: &str) -> Result<RateLimitPolicyName, Status> {
    Ok(RateLimitPolicyName::parse(field, name).map_err(Error::from)?)
}

/// The `RateLimitPolicyService` implementation.
pub struct RateLimitPolicies {
    store: Store,
    /// The engine a write waits for, so it returns once it applies.
    limiter: RateLimiter,
    /// Every method path the server serves: an exact method selector must
    /// name one of them.
    methods: Arc<HashSet<Box<str>>>,
}

impl RateLimitPolicies {
    /// Serves policies from `store`; `methods` are the paths the server
    /// serves (`Policies::paths`).
    pub fn new<'a>(
        store: Store,
        limiter: RateLimiter,
        methods: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            store,
            limiter,
            methods: Arc::new(methods.into_iter().map(Box::from).collect()),
        }
    }

    /// Waits until this replica's engine applies the write just made, so
    /// the caller's next call is decided by it. Bounded: a slow or failed
    /// reload does not fail the write, which the next reload applies.
    async fn applied(&self) {
        let generation = self.store.rate_limit_generation();
        if !self.limiter.wait_loaded(generation, APPLY_WAIT).await {
            tracing::warn!(
                "rate-limit policies: a write was not applied within {APPLY_WAIT:?}; the next reload applies it"
            );
        }
    }

    fn served(&self) -> impl Fn(&str) -> bool + '_ {
        |path| self.methods.contains(path)
    }

    /// Checks the selector of a policy of `org` (unset: matches all).
    fn selector(&self, v: &mut Violations, org: &str, s: Option<&RateLimitSelector>) -> Selector {
        let empty = RateLimitSelector::default();
        let s = s.unwrap_or(&empty);
        rules::selector(
            v,
            &format!("{FIELD}.selector"),
            org,
            &SelectorInput {
                method: &s.method,
                principal: &s.principal,
                api_key: &s.api_key,
                oauth_client: &s.oauth_client,
                headers: &s.headers,
                descriptors: &s.descriptors,
            },
            &self.served(),
        )
    }
}

/// Checks `limit`; `Some(None)` when unset, `None` when invalid.
fn rate(v: &mut Violations, p: &RateLimitPolicy) -> Option<Option<Rate>> {
    match &p.limit {
        None => Some(None),
        Some(l) => rules::rate(v, &format!("{FIELD}.limit"), l.limit, l.period, l.burst).map(Some),
    }
}

/// Checks `quota`; `Some(None)` when unset, `None` when invalid.
fn quota(v: &mut Violations, p: &RateLimitPolicy) -> Option<Option<Quota>> {
    match &p.quota {
        None => Some(None),
        Some(q) => rules::quota(v, &format!("{FIELD}.quota"), q.limit, q.period).map(Some),
    }
}

fn algorithm(v: &mut Violations, p: &RateLimitPolicy) -> Option<RateAlgorithm> {
    v.take(RateAlgorithm::parse(
        &format!("{FIELD}.algorithm"),
        p.algorithm,
    ))
}

fn failure_mode(v: &mut Violations, p: &RateLimitPolicy) -> Option<FailureMode> {
    v.take(FailureMode::parse(
        &format!("{FIELD}.failure_mode"),
        p.failure_mode,
    ))
}

fn key_by(v: &mut Violations, p: &RateLimitPolicy) -> Option<KeyBy> {
    v.take(KeyBy::parse(&format!("{FIELD}.key_by"), p.key_by))
}

#[tonic::async_trait]
impl RateLimitPolicyService for RateLimitPolicies {
    async fn create_rate_limit_policy(
        &self,
        mut req: Request<CreateRateLimitPolicyRequest>,
    ) -> Result<Response<RateLimitPolicy>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let p = req.rate_limit_policy.unwrap_or_default();
        let mut v = Violations::default();
        let id = if req.rate_limit_policy_id.is_empty() {
            generate_id()
        } else {
            v.check(validate_user_id(
                "rate_limit_policy_id",
                &req.rate_limit_policy_id,
            ));
            req.rate_limit_policy_id
        };
        v.check(rules::display_name(
            &format!("{FIELD}.display_name"),
            &p.display_name,
        ));
        let selector = self.selector(&mut v, &parent.org, p.selector.as_ref());
        let rate = rate(&mut v, &p);
        let quota = quota(&mut v, &p);
        let algorithm = algorithm(&mut v, &p);
        let failure_mode = failure_mode(&mut v, &p);
        let key_by = key_by(&mut v, &p);
        let (Some(rate), Some(quota), Some(algorithm), Some(failure_mode), Some(key_by)) =
            (rate, quota, algorithm, failure_mode, key_by)
        else {
            return Err(Error::InvalidArgument(v).into());
        };
        let spec = PolicySpec {
            display_name: p.display_name,
            selector,
            rate,
            quota,
            algorithm,
            shadow: p.shadow,
            failure_mode,
            key_by,
        };
        // A bad selector entry is dropped from `spec`: judge the
        // combination only once the fields themselves are right.
        if v.0.is_empty() {
            rules::check_combination(&mut v, FIELD, &spec.combination());
        }
        v.into_result()?;
        let new = NewRateLimitPolicy {
            name: RateLimitPolicyName {
                org: parent.org,
                policy: id,
            },
            spec,
        };
        let row = self
            .store
            .create_rate_limit_policy(&caller.write_context(), new)
            .await?;
        self.applied().await;
        Ok(Response::new(row.to_proto()))
    }

    async fn get_rate_limit_policy(
        &self,
        mut req: Request<GetRateLimitPolicyRequest>,
    ) -> Result<Response<RateLimitPolicy>, Status> {
        let caller = caller(&mut req)?;
        let name = parse_name("name", &req.get_ref().name)?;
        caller.authorize(&name.org)?;
        let row = self.store.get_rate_limit_policy(&name).await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn list_rate_limit_policies(
        &self,
        mut req: Request<ListRateLimitPoliciesRequest>,
    ) -> Result<Response<ListRateLimitPoliciesResponse>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let (_, page) = list_params(
            "rateLimitPolicies",
            &req.parent,
            "",
            req.page_size,
            &req.page_token,
            &[],
        )?;
        self.store.get_organization(&parent.org).await?;
        let (rows, next_page_token) = self
            .store
            .list_rate_limit_policies(parent.org, page)
            .await?;
        Ok(Response::new(ListRateLimitPoliciesResponse {
            rate_limit_policies: rows.iter().map(|r| r.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn update_rate_limit_policy(
        &self,
        mut req: Request<UpdateRateLimitPolicyRequest>,
    ) -> Result<Response<RateLimitPolicy>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let Some(p) = req.rate_limit_policy else {
            return Err(Error::invalid(FIELD, "required").into());
        };
        let name = parse_name(&format!("{FIELD}.name"), &p.name)?;
        caller.authorize(&name.org)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let fields = mask::resolve(&paths, MUTABLE, |f| match f {
            "display_name" => !p.display_name.is_empty(),
            "selector" => p.selector.is_some(),
            "limit" => p.limit.is_some(),
            "quota" => p.quota.is_some(),
            "algorithm" => p.algorithm != 0,
            "shadow" => p.shadow,
            "failure_mode" => p.failure_mode != 0,
            "key_by" => p.key_by != 0,
            _ => false,
        })?;
        let mut v = Violations::default();
        let mut ch = RateLimitPolicyChanges::default();
        for f in fields {
            match f {
                "display_name" => {
                    v.check(rules::display_name(
                        &format!("{FIELD}.display_name"),
                        &p.display_name,
                    ));
                    ch.display_name = Some(p.display_name.clone());
                }
                "selector" => {
                    ch.selector = Some(self.selector(&mut v, &name.org, p.selector.as_ref()));
                }
                "limit" => ch.rate = rate(&mut v, &p),
                "quota" => ch.quota = quota(&mut v, &p),
                "algorithm" => ch.algorithm = algorithm(&mut v, &p),
                "shadow" => ch.shadow = Some(p.shadow),
                "failure_mode" => ch.failure_mode = failure_mode(&mut v, &p),
                "key_by" => ch.key_by = key_by(&mut v, &p),
                _ => {}
            }
        }
        v.into_result()?;
        let row = self
            .store
            .update_rate_limit_policy(&caller.write_context(), name, p.etag, ch)
            .await?;
        self.applied().await;
        Ok(Response::new(row.to_proto()))
    }

    async fn delete_rate_limit_policy(
        &self,
        mut req: Request<DeleteRateLimitPolicyRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let name = parse_name("name", &req.name)?;
        caller.authorize(&name.org)?;
        self.store
            .delete_rate_limit_policy(&caller.write_context(), name, req.etag)
            .await?;
        self.applied().await;
        Ok(Response::new(()))
    }
}
