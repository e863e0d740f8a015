//! The ingester's gRPC service (`cairn.ingester.v1.Ingester`).
//!
//! `Push` is served with the push codec of `cairn-rpc`: the
//! request's bytes go to the ingester as they are and are decoded there, off
//! the async runtime. `Select` answers with bytes the ingester encodes
//! itself from its head (labels and chunks copied once). Every other method
//! uses the generated server.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use cairn_common::storage::Queryable;
use cairn_proto::ingester::ingester_server::{Ingester as IngesterRpc, IngesterServer};
use cairn_proto::ingester::{
    LabelSet, LabelValuesRequest, LabelsRequest, MetadataRequest, MetadataResponse, PushRequest, PushResponse,
    SelectRequest, SelectResponse, SeriesResponse, StringsResponse,
};
use cairn_rpc::codec::{PUSH_PATH, PushServerCodec, SELECT_PATH, SelectServerCodec};
use cairn_rpc::convert::{self, LabelsQuery, SelectQuery};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::Ingester;

/// The ingester's gRPC service: `Push` and `Select` by their codecs, the
/// rest by the generated server.
#[derive(Debug, Clone)]
pub struct IngesterGrpc {
    ingester: Ingester,
    generated: IngesterServer<IngesterService>,
}

pub fn service(ingester: Ingester) -> IngesterGrpc {
    let generated = IngesterServer::new(IngesterService { ingester: ingester.clone() })
        .max_decoding_message_size(cairn_rpc::MAX_REQUEST_BYTES)
        .max_encoding_message_size(cairn_rpc::client::MAX_RESPONSE_BYTES);
    IngesterGrpc { ingester, generated }
}

impl NamedService for IngesterGrpc {
    const NAME: &'static str = <IngesterServer<IngesterService> as NamedService>::NAME;
}

/// `Select`, answered with bytes encoded by the ingester.
struct SelectMethod(IngesterService);

impl UnaryService<SelectRequest> for SelectMethod {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<SelectRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            service.ready()?;
            let q = SelectQuery::from_proto(request.into_inner())?;
            if q.accept_chunks {
                return Ok(Response::new(service.ingester.select_encoded(&q.tenant, &q.request()).await?));
            }
            // A querier that predates chunks: plain samples.
            let series = service.ingester.select(&q.tenant, &q.request()).await?;
            Ok(Response::new(convert::samples_response(&series)))
        })
    }
}

/// `Push` with the request's bytes.
struct PushMethod(Ingester);

impl UnaryService<Bytes> for PushMethod {
    type Response = PushResponse;
    type Future = BoxFuture<Response<PushResponse>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingester = self.0.clone();
        Box::pin(async move {
            let outcome = ingester.push_encoded(request.into_inner()).await?;
            Ok(Response::new(convert::outcome_to_proto(outcome)))
        })
    }
}

impl<B> Service<http::Request<B>> for IngesterGrpc
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limits = (Some(cairn_rpc::MAX_REQUEST_BYTES), Some(cairn_rpc::client::MAX_RESPONSE_BYTES));
        match req.uri().path() {
            PUSH_PATH => {
                let ingester = self.ingester.clone();
                Box::pin(async move {
                    let mut grpc =
                        tonic::server::Grpc::new(PushServerCodec).apply_max_message_size_config(limits.0, limits.1);
                    Ok(grpc.unary(PushMethod(ingester), req).await)
                })
            }
            SELECT_PATH => {
                let service = IngesterService { ingester: self.ingester.clone() };
                Box::pin(async move {
                    let mut grpc =
                        tonic::server::Grpc::new(SelectServerCodec).apply_max_message_size_config(limits.0, limits.1);
                    Ok(grpc.unary(SelectMethod(service), req).await)
                })
            }
            _ => self.generated.call(req),
        }
    }
}

/// The generated server's handler.
#[derive(Debug, Clone)]
pub struct IngesterService {
    ingester: Ingester,
}

impl IngesterService {
    /// Reads from a head still being replayed would miss samples without
    /// saying so: refuse them, so that a querier counts this replica as
    /// failed instead.
    fn ready(&self) -> Result<(), Status> {
        if self.ingester.is_ready() {
            Ok(())
        } else {
            Err(Status::unavailable("ingester is replaying its write-ahead log"))
        }
    }
}

#[tonic::async_trait]
impl IngesterRpc for IngesterService {
    /// Never reached: [`IngesterGrpc`] serves `Push` with the push codec.
    async fn push(&self, _request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        Err(Status::unimplemented("Push is served by the push codec"))
    }

    /// Never reached: [`IngesterGrpc`] serves `Select` with the select codec.
    async fn select(&self, _request: Request<SelectRequest>) -> Result<Response<SelectResponse>, Status> {
        Err(Status::unimplemented("Select is served by the select codec"))
    }

    async fn series(&self, request: Request<LabelsRequest>) -> Result<Response<SeriesResponse>, Status> {
        self.ready()?;
        let q = LabelsQuery::from_proto(request.into_inner())?;
        let series = self.ingester.series(&q.tenant, &q.request()).await?;
        Ok(Response::new(SeriesResponse {
            series: series.iter().map(|l| LabelSet { labels: convert::labels_to_proto(l) }).collect(),
        }))
    }

    async fn label_names(&self, request: Request<LabelsRequest>) -> Result<Response<StringsResponse>, Status> {
        self.ready()?;
        let q = LabelsQuery::from_proto(request.into_inner())?;
        let values = self.ingester.label_names(&q.tenant, &q.request()).await?;
        Ok(Response::new(StringsResponse { values }))
    }

    async fn label_values(&self, request: Request<LabelValuesRequest>) -> Result<Response<StringsResponse>, Status> {
        self.ready()?;
        let req = request.into_inner();
        let q = LabelsQuery::from_proto(req.request.unwrap_or_default())?;
        let values = self.ingester.label_values(&q.tenant, &req.name, &q.request()).await?;
        Ok(Response::new(StringsResponse { values }))
    }

    async fn metadata(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        self.ready()?;
        let req = request.into_inner();
        let tenant = convert::tenant_from_proto(&req.tenant)?;
        let by_family = self.ingester.metadata(&tenant, req.metric.as_deref()).await?;
        Ok(Response::new(MetadataResponse {
            metadata: by_family.into_values().flatten().map(convert::metadata_to_proto).collect(),
        }))
    }
}
