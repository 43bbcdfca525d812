//! An in-process implementation of the test-only `TranscodeTestService`
//! (`tests/proto/tollgate/testing/v1/transcode.proto`): every method
//! answers with what its request carried, so a test sees what the
//! transcoder built, and `WatchThings` streams `count` messages, then ends
//! with OK or, when `fail` is set, with FAILED_PRECONDITION.

use std::pin::Pin;

use futures::{Stream, stream};
use tonic::{Request, Response, Status};

use crate::testing_proto::{
    Counter, File, GetCounterRequest, GetFileRequest, GetFileResponse, GetThingRequest,
    RenameThingRequest, SearchThingsRequest, SearchThingsResponse, TagThingRequest, Thing,
    WatchThingsRequest, WatchThingsResponse,
    transcode_test_service_server::{TranscodeTestService, TranscodeTestServiceServer},
};

/// The message `WatchThings` fails with when asked to.
pub const WATCH_FAILURE: &str = "asked to fail";

/// The echoing service.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestingService;

impl TestingService {
    /// The service, ready to add to a tonic router.
    pub fn server() -> TranscodeTestServiceServer<Self> {
        TranscodeTestServiceServer::new(TestingService)
    }
}

/// The thing each `WatchThings` message carries: numbered from 1.
pub fn watched_thing(parent: &str, sequence: u64) -> WatchThingsResponse {
    WatchThingsResponse {
        sequence,
        thing: Some(Thing {
            name: format!("{parent}/things/{sequence}"),
            size: sequence as i64,
            ..Thing::default()
        }),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchThingsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TranscodeTestService for TestingService {
    async fn get_file(
        &self,
        req: Request<GetFileRequest>,
    ) -> Result<Response<GetFileResponse>, Status> {
        let path = req.into_inner().path;
        Ok(Response::new(GetFileResponse {
            file: Some(File {
                content: path.clone().into_bytes(),
                path,
            }),
            etag: "v1".into(),
        }))
    }

    async fn search_things(
        &self,
        req: Request<SearchThingsRequest>,
    ) -> Result<Response<SearchThingsResponse>, Status> {
        Ok(Response::new(SearchThingsResponse {
            request: Some(req.into_inner()),
            things: Vec::new(),
        }))
    }

    async fn list_thing_tags(
        &self,
        req: Request<GetThingRequest>,
    ) -> Result<Response<Thing>, Status> {
        let name = req.into_inner().name;
        Ok(Response::new(Thing {
            tags: vec![format!("{name}:a"), format!("{name}:b")],
            name,
            ..Thing::default()
        }))
    }

    async fn rename_thing(
        &self,
        req: Request<RenameThingRequest>,
    ) -> Result<Response<Thing>, Status> {
        let req = req.into_inner();
        Ok(Response::new(Thing {
            name: req.name,
            display_name: req.display_name,
            ..Thing::default()
        }))
    }

    async fn tag_thing(&self, req: Request<TagThingRequest>) -> Result<Response<Thing>, Status> {
        let req = req.into_inner();
        Ok(Response::new(Thing {
            name: req.name,
            tags: req.tags,
            ..Thing::default()
        }))
    }

    async fn describe_thing(
        &self,
        req: Request<GetThingRequest>,
    ) -> Result<Response<Thing>, Status> {
        Ok(Response::new(Thing {
            name: req.into_inner().name,
            ..Thing::default()
        }))
    }

    /// Echoes request metadata `x-echo` back as response metadata
    /// `x-echoed`, so the protocols' metadata mapping can be seen end to
    /// end.
    async fn get_counter(
        &self,
        req: Request<GetCounterRequest>,
    ) -> Result<Response<Counter>, Status> {
        let echo = req.metadata().get("x-echo").cloned();
        let mut response = Response::new(Counter {
            id: req.into_inner().id,
            ..Counter::default()
        });
        if let Some(echo) = echo {
            response.metadata_mut().insert("x-echoed", echo);
        }
        Ok(response)
    }

    async fn put_counter(&self, req: Request<Counter>) -> Result<Response<Counter>, Status> {
        Ok(Response::new(req.into_inner()))
    }

    type WatchThingsStream = WatchStream;

    async fn watch_things(
        &self,
        req: Request<WatchThingsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let req = req.into_inner();
        let count = u64::try_from(req.count.max(0)).unwrap_or_default();
        let parent = req.parent;
        let items = (1..=count).map(move |i| Ok(watched_thing(&parent, i)));
        let end = req
            .fail
            .then(|| Err(Status::failed_precondition(WATCH_FAILURE)));
        Ok(Response::new(Box::pin(stream::iter(items.chain(end)))))
    }
}
