//! `EventService`: the audit log, read from the outbox the writes append
//! to.

use tollgate::tollgate::v1::{
    ListEventsRequest, ListEventsResponse, event_service_server::EventService,
};
use tonic::{Request, Response, Status};

use super::{caller, list_params};
use crate::{
    domain::{Error, filter::FieldType, names::OrgName},
    store::Store,
};

/// What ListEvents may filter on (`ListEventsRequest.filter`).
pub const FILTERS: &[(&str, FieldType)] = &[
    ("type", FieldType::Text),
    ("actor", FieldType::Text),
    ("resource", FieldType::Text),
    ("time", FieldType::Timestamp),
];

/// The parent naming every organization, for platform admins.
const ALL_ORGANIZATIONS: &str = "organizations/-";

/// The `EventService` implementation.
pub struct Events {
    store: Store,
}

impl Events {
    /// Serves the events `store` holds.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl EventService for Events {
    async fn list_events(
        &self,
        req: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let org = if req.parent == ALL_ORGANIZATIONS {
            // Not an organization anyone belongs to: only platform admins
            // pass (and scopes still apply to them).
            caller.authorize("-")?;
            None
        } else {
            let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
            caller.authorize(&parent.org)?;
            Some(parent.org)
        };
        let (filter, page) = list_params(
            "events",
            &req.parent,
            &req.filter,
            req.page_size,
            &req.page_token,
            FILTERS,
        )?;
        let (events, next_page_token) = self.store.list_events(org, filter, page).await?;
        Ok(Response::new(ListEventsResponse {
            events,
            next_page_token,
        }))
    }
}
