//! `tollgate.v1.WebhookService`.

use std::sync::Arc;

use tollgate::tollgate::v1::{
    CreateWebhookRequest, DeleteWebhookRequest, Delivery, GetWebhookRequest, ListDeliveriesRequest,
    ListDeliveriesResponse, ListWebhooksRequest, ListWebhooksResponse, RetryDeliveryRequest,
    RotateWebhookSecretRequest, UpdateWebhookRequest, Webhook, webhook::State,
    webhook_service_server::WebhookService,
};
use tonic::{Request, Response, Status};

use super::{caller, list_params};
use crate::{
    domain::{
        Error, FieldViolation, Violations, mask,
        names::{DeliveryName, OrgName, WebhookName, generate_id, validate_user_id},
        oauth_client::secret_grace,
        validate::{self, MAX_DESCRIPTION},
        webhook::{self as rules, Targets},
    },
    oauth::keys::KeyRing,
    store::{
        Store,
        webhooks::{DELIVERY_FILTERS, FILTERS, NewWebhook, WebhookChanges, seal_context},
    },
    webhooks::signature::Secret,
};

const MUTABLE: &[&str] = &["display_name", "description", "url", "event_types", "state"];

fn parse_name(field: &str, name: &str) -> Result<WebhookName, Status> {
    Ok(WebhookName::parse(field, name).map_err(Error::from)?)
}

/// A settable state, or the violation naming `field`.
fn state(field: &str, state: i32) -> Result<i16, FieldViolation> {
    match State::try_from(state) {
        Ok(s @ (State::Active | State::Disabled)) => Ok(s as i16),
        _ => Err(FieldViolation::new(field, "must be ACTIVE or DISABLED")),
    }
}

/// The `WebhookService` implementation.
pub struct Webhooks {
    store: Store,
    keys: KeyRing,
    targets: Arc<Targets>,
}

impl Webhooks {
    /// Serves webhooks from `store`, sealing their secrets with `keys`,
    /// accepting URLs `targets` permits.
    pub fn new(store: Store, keys: KeyRing, targets: Targets) -> Self {
        Self {
            store,
            keys,
            targets: Arc::new(targets),
        }
    }

    /// A new secret for the webhook of `uid`: the text to show once and
    /// its sealed form to store.
    fn mint(&self, uid: &str) -> Result<(String, String), Status> {
        let secret = Secret::generate();
        let sealed = self.keys.seal(&seal_context(uid), secret.as_bytes())?;
        Ok((secret, sealed))
    }
}

#[tonic::async_trait]
impl WebhookService for Webhooks {
    async fn create_webhook(
        &self,
        mut req: Request<CreateWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let w = req.webhook.unwrap_or_default();
        let mut v = Violations::default();
        let id = if req.webhook_id.is_empty() {
            generate_id()
        } else {
            v.check(validate_user_id("webhook_id", &req.webhook_id));
            req.webhook_id
        };
        v.check(validate::display_name(
            "webhook.display_name",
            &w.display_name,
        ));
        v.check(validate::bounded_text(
            "webhook.description",
            &w.description,
            MAX_DESCRIPTION,
        ));
        let url = v.take(rules::url("webhook.url", &w.url, &self.targets));
        let event_types = rules::event_types(&mut v, "webhook.event_types", &w.event_types);
        let state = if w.state == State::Unspecified as i32 {
            Some(State::Active as i16)
        } else {
            v.take(state("webhook.state", w.state))
        };
        let (Some(url), Some(state)) = (url, state) else {
            return Err(Error::InvalidArgument(v).into());
        };
        v.into_result()?;
        let uid = generate_id();
        let (secret, secret_sealed) = self.mint(&uid)?;
        let row = self
            .store
            .create_webhook(
                &caller.write_context(),
                NewWebhook {
                    name: WebhookName {
                        org: parent.org,
                        webhook: id,
                    },
                    uid,
                    display_name: w.display_name,
                    description: w.description,
                    url,
                    event_types,
                    state,
                    secret_sealed,
                },
            )
            .await?;
        let mut out = row.to_proto();
        out.secret = secret;
        Ok(Response::new(out))
    }

    async fn get_webhook(
        &self,
        mut req: Request<GetWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let caller = caller(&mut req)?;
        let name = parse_name("name", &req.get_ref().name)?;
        caller.authorize(&name.org)?;
        let row = self.store.get_webhook(&name).await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn list_webhooks(
        &self,
        mut req: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let (filter, page) = list_params(
            "webhooks",
            &req.parent,
            &req.filter,
            req.page_size,
            &req.page_token,
            FILTERS,
        )?;
        self.store.get_organization(&parent.org).await?;
        let (rows, next_page_token) = self.store.list_webhooks(parent.org, filter, page).await?;
        Ok(Response::new(ListWebhooksResponse {
            webhooks: rows.iter().map(|r| r.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn update_webhook(
        &self,
        mut req: Request<UpdateWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let Some(w) = req.webhook else {
            return Err(Error::invalid("webhook", "required").into());
        };
        let name = parse_name("webhook.name", &w.name)?;
        caller.authorize(&name.org)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let fields = mask::resolve(&paths, MUTABLE, |f| match f {
            "display_name" => !w.display_name.is_empty(),
            "description" => !w.description.is_empty(),
            "url" => !w.url.is_empty(),
            "event_types" => !w.event_types.is_empty(),
            "state" => w.state != 0,
            _ => false,
        })?;
        let mut v = Violations::default();
        let mut ch = WebhookChanges::default();
        for f in fields {
            match f {
                "display_name" => {
                    v.check(validate::display_name(
                        "webhook.display_name",
                        &w.display_name,
                    ));
                    ch.display_name = Some(w.display_name.clone());
                }
                "description" => {
                    v.check(validate::bounded_text(
                        "webhook.description",
                        &w.description,
                        MAX_DESCRIPTION,
                    ));
                    ch.description = Some(w.description.clone());
                }
                "url" => ch.url = v.take(rules::url("webhook.url", &w.url, &self.targets)),
                "event_types" => {
                    let types = rules::event_types(&mut v, "webhook.event_types", &w.event_types);
                    ch.event_types = Some(types.join(" "));
                }
                "state" => ch.state = v.take(state("webhook.state", w.state)),
                _ => {}
            }
        }
        v.into_result()?;
        let row = self
            .store
            .update_webhook(&caller.write_context(), name, w.etag, ch)
            .await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn delete_webhook(
        &self,
        mut req: Request<DeleteWebhookRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let name = parse_name("name", &req.name)?;
        caller.authorize(&name.org)?;
        self.store
            .delete_webhook(&caller.write_context(), name, req.etag)
            .await?;
        Ok(Response::new(()))
    }

    async fn rotate_webhook_secret(
        &self,
        mut req: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let name = parse_name("name", &req.name)?;
        caller.authorize(&name.org)?;
        let grace = secret_grace("grace_period", req.grace_period.as_ref()).map_err(Error::from)?;
        let secret = Secret::generate();
        let (keys, plain) = (self.keys.clone(), secret.clone());
        let row = self
            .store
            .rotate_webhook_secret(&caller.write_context(), name, req.etag, grace, move |cur| {
                keys.seal(&seal_context(&cur.uid), plain.as_bytes())
            })
            .await?;
        let mut out = row.to_proto();
        out.secret = secret;
        Ok(Response::new(out))
    }

    async fn list_deliveries(
        &self,
        mut req: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let hook = parse_name("parent", &req.parent)?;
        caller.authorize(&hook.org)?;
        let (filter, page) = list_params(
            "deliveries",
            &req.parent,
            &req.filter,
            req.page_size,
            &req.page_token,
            DELIVERY_FILTERS,
        )?;
        let (rows, next_page_token) = self.store.list_deliveries(hook, filter, page).await?;
        Ok(Response::new(ListDeliveriesResponse {
            deliveries: rows.iter().map(|r| r.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn retry_delivery(
        &self,
        mut req: Request<RetryDeliveryRequest>,
    ) -> Result<Response<Delivery>, Status> {
        let caller = caller(&mut req)?;
        let name = DeliveryName::parse("name", &req.get_ref().name).map_err(Error::from)?;
        caller.authorize(&name.webhook.org)?;
        let row = self.store.retry_delivery(name).await?;
        Ok(Response::new(row.to_proto()))
    }
}
