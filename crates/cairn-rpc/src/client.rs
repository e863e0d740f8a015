//! The client side of the ingester protocol: one ingester as a [`Pusher`]
//! and a [`Queryable`], and the [`Clients`] that build them for ring
//! members.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use cairn_common::ErrorCode;
use cairn_common::chunk::SeriesChunks;
use cairn_common::grpc::{Channels, with_deadline};
use cairn_common::push::{MetricMetadata, PushBatch, PushOutcome, Pusher};
use cairn_common::status::ServiceError;
use cairn_common::storage::{LabelsRequest, Queryable, SelectRequest, Series, decode_replicas};
use cairn_common::{Labels, Sample, TenantId};
use cairn_proto::ingester as pb;
use cairn_proto::ingester::ingester_client::IngesterClient as Rpc;
use tonic::transport::Channel;

use crate::codec::{EncodedPush, PUSH_PATH, PushCodec, SeriesBuffer, encode_head};
use crate::convert;

/// The largest message an ingester answers with (a select of many series).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Clients for ingesters, built on the process's shared channels.
#[derive(Clone, Debug)]
pub struct Clients {
    pub channels: Channels,
    /// Deadline of each call to an ingester.
    pub timeout: Duration,
}

impl Clients {
    /// The client of the ingester at `addr` (`host:port`).
    pub fn get(&self, addr: &str) -> Result<IngesterClient, ServiceError> {
        let channel = self.channels.get(addr).map_err(|e| ServiceError::new(ErrorCode::Unavailable, e))?;
        Ok(IngesterClient::new(addr.to_owned(), channel, self.timeout))
    }
}

/// One ingester, reached over gRPC.
#[derive(Clone, Debug)]
pub struct IngesterClient {
    /// The ingester's address, for error messages.
    pub addr: String,
    channel: Channel,
    timeout: Duration,
}

impl IngesterClient {
    pub fn new(addr: String, channel: Channel, timeout: Duration) -> Self {
        Self { addr, channel, timeout }
    }

    fn rpc(&self) -> Rpc<Channel> {
        Rpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(crate::MAX_REQUEST_BYTES)
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        r
    }

    /// Names the ingester in the error.
    fn error(&self, s: tonic::Status) -> ServiceError {
        self.named(ServiceError::from(s))
    }

    fn named(&self, mut e: ServiceError) -> ServiceError {
        e.message = format!("ingester {}: {}", self.addr, e.message);
        e
    }
}

impl IngesterClient {
    /// Sends a push request already encoded (see [`crate::codec`]).
    pub async fn push_encoded(&self, req: EncodedPush) -> Result<PushOutcome, ServiceError> {
        let call = async {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone())
                .max_encoding_message_size(crate::MAX_REQUEST_BYTES)
                .max_decoding_message_size(MAX_RESPONSE_BYTES);
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(format!("transport: {e}")))?;
            let path = http::uri::PathAndQuery::from_static(PUSH_PATH);
            grpc.unary(self.request(req), path, PushCodec).await
        };
        let resp = with_deadline(self.timeout, call).await.map_err(|s| self.error(s))?.into_inner();
        Ok(convert::outcome_from_proto(resp))
    }
}

/// The same encoding as a replicated write, for one ingester.
#[async_trait]
impl Pusher for IngesterClient {
    async fn push(&self, tenant: &TenantId, batch: PushBatch) -> Result<PushOutcome, ServiceError> {
        let mut buf = SeriesBuffer::for_series(&batch.series);
        for s in &batch.series {
            buf.push(s);
        }
        self.push_encoded(EncodedPush::all(encode_head(tenant, &batch.metadata), buf.finish())).await
    }
}

impl IngesterClient {
    /// A select answered with the ingester's chunks, not yet decoded, so
    /// that a reader of several replicas decodes what they share once (see
    /// [`decode_replicas`]). Sorted by labels.
    pub async fn select_chunks(
        &self,
        tenant: &TenantId,
        req: &SelectRequest<'_>,
    ) -> Result<Vec<(Labels, SeriesChunks)>, ServiceError> {
        let msg = convert::select_to_proto(tenant, req);
        let resp = with_deadline(self.timeout, self.rpc().select(self.request(msg)))
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        let mut out = Vec::with_capacity(resp.series.len() + resp.chunked.len());
        // An ingester that predates chunks answers with samples.
        for ts in resp.series {
            let samples = ts.samples.into_iter().map(|s| Sample::new(s.timestamp, s.value)).collect();
            out.push((convert::labels_from_proto(ts.labels), SeriesChunks { chunks: Vec::new(), samples }));
        }
        for cs in resp.chunked {
            out.push(convert::chunked_series_from_proto(cs).map_err(|e| self.named(e))?);
        }
        Ok(out)
    }
}

#[async_trait]
impl Queryable for IngesterClient {
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
        let answer = self.select_chunks(tenant, req).await?;
        decode_replicas(vec![answer], req)
    }

    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError> {
        let msg = convert::labels_request_to_proto(tenant, req);
        let resp = with_deadline(self.timeout, self.rpc().series(self.request(msg)))
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(resp.series.into_iter().map(|s| convert::labels_from_proto(s.labels)).collect())
    }

    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError> {
        let msg = convert::labels_request_to_proto(tenant, req);
        Ok(with_deadline(self.timeout, self.rpc().label_names(self.request(msg)))
            .await
            .map_err(|s| self.error(s))?
            .into_inner()
            .values)
    }

    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError> {
        let msg = pb::LabelValuesRequest {
            request: Some(convert::labels_request_to_proto(tenant, req)),
            name: name.to_owned(),
        };
        Ok(with_deadline(self.timeout, self.rpc().label_values(self.request(msg)))
            .await
            .map_err(|s| self.error(s))?
            .into_inner()
            .values)
    }

    async fn metadata(
        &self,
        tenant: &TenantId,
        metric: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, ServiceError> {
        let msg = pb::MetadataRequest { tenant: tenant.as_str().to_owned(), metric: metric.map(str::to_owned) };
        let resp = with_deadline(self.timeout, self.rpc().metadata(self.request(msg)))
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(convert::metadata_from_proto(resp.metadata))
    }
}
