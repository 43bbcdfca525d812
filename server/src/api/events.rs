//! `EventService`: the audit log, read from the outbox the writes append
//! to.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use tollgate::tollgate::v1::{
    ListEventsRequest, ListEventsResponse, WatchEventsRequest, WatchEventsResponse,
    event_service_server::EventService,
};
use tonic::{Request, Response, Status};

use super::{caller, list_params};
use crate::{
    bus::Bus,
    domain::{Error, filter::FieldType, names::OrgName},
    layers::authenticate::{self, Credentials},
    store::Store,
    watch::{Access, Start, Watch},
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
    bus: Bus,
    credentials: Credentials,
    recheck: std::time::Duration,
}

impl Events {
    /// Serves the events `store` holds, and follows new ones on `bus`;
    /// watches check their callers again with `credentials` every
    /// `recheck`.
    pub fn new(
        store: Store,
        bus: Bus,
        credentials: Credentials,
        recheck: std::time::Duration,
    ) -> Self {
        Self {
            store,
            bus,
            credentials,
            recheck,
        }
    }
}

/// A watch's responses.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Events {
    type WatchEventsStream = WatchStream;

    async fn watch_events(
        &self,
        mut req: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = caller(&mut req)?;
        let credential = authenticate::credential(req.metadata().as_ref())?
            .unwrap_or_default()
            .to_owned();
        let req = req.into_inner();
        if req.parent == ALL_ORGANIZATIONS {
            return Err(Error::invalid(
                "parent",
                "a watch follows one organization (ids are ordered within one only); \
                 follow every organization on NATS",
            )
            .into());
        }
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let filter = crate::domain::filter::parse(&req.filter, FILTERS)?;
        let start = Start::parse("cursor", &req.cursor)?;
        let access = Access {
            credentials: self.credentials.clone(),
            credential,
            caller,
            every: self.recheck,
        };
        let watch = Watch::start(
            self.store.clone(),
            &self.bus,
            access,
            parent.org,
            filter,
            start,
        )
        .await?;
        let stream = watch.into_stream().map(|item| {
            item.map(|event| WatchEventsResponse { event: Some(event) })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_events(
        &self,
        mut req: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let caller = caller(&mut req)?;
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
