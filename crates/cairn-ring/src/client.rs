//! A client of one ingester's gRPC service, as a [`Pusher`] and a
//! [`Queryable`], so that replication code treats remote ingesters like
//! the in-process one.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use cairn_common::push::{MetricMetadata, MetricType, PushBatch, PushOutcome, Pusher, RejectReason, Rejection};
use cairn_common::status::ServiceError;
use cairn_common::storage::{LabelsRequest, Queryable, SelectRequest, Series};
use cairn_common::{Label, Labels, MatchOp, Matcher, Sample, TenantId};
use cairn_proto::ingester as pb;
use cairn_proto::ingester::ingester_client::IngesterClient as Rpc;
use cairn_proto::prometheus;
use tonic::transport::Channel;

use crate::channels::with_deadline;
use crate::wire::{self, EncodedPush, PushCodec};

#[derive(Clone, Debug)]
pub struct IngesterClient {
    /// The ingester's address, for error messages.
    pub addr: String,
    channel: Channel,
    timeout: Duration,
}

fn labels_from_proto(labels: Vec<prometheus::Label>) -> Labels {
    Labels::new(labels.into_iter().map(|l| Label { name: l.name, value: l.value }).collect())
}

fn matchers_to_proto(ms: &[Matcher]) -> Vec<pb::Matcher> {
    ms.iter()
        .map(|m| pb::Matcher {
            r#type: match m.op {
                MatchOp::Equal => pb::matcher::Type::Eq,
                MatchOp::NotEqual => pb::matcher::Type::Neq,
                MatchOp::Regex => pb::matcher::Type::Re,
                MatchOp::NotRegex => pb::matcher::Type::Nre,
            } as i32,
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect()
}

impl IngesterClient {
    pub fn new(addr: String, channel: Channel, timeout: Duration) -> Self {
        Self { addr, channel, timeout }
    }

    fn rpc(&self) -> Rpc<Channel> {
        Rpc::new(self.channel.clone()).max_decoding_message_size(usize::MAX).max_encoding_message_size(usize::MAX)
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        r
    }

    /// Names the ingester in the error.
    fn error(&self, s: tonic::Status) -> ServiceError {
        let mut e = ServiceError::from(s);
        e.message = format!("ingester {}: {}", self.addr, e.message);
        e
    }

    fn labels_request(tenant: &TenantId, req: &LabelsRequest<'_>) -> pb::LabelsRequest {
        pb::LabelsRequest {
            tenant: tenant.as_str().to_owned(),
            matcher_sets: req.matcher_sets.iter().map(|s| pb::MatcherSet { matchers: matchers_to_proto(s) }).collect(),
            start: req.start,
            end: req.end,
            limit: req.limit as u64,
        }
    }
}

fn outcome_from_proto(resp: pb::PushResponse) -> PushOutcome {
    PushOutcome {
        samples_appended: resp.samples_appended,
        series_created: resp.series_created,
        rejections: resp
            .rejections
            .into_iter()
            .filter_map(|r| {
                Some(Rejection { reason: RejectReason::parse(&r.reason)?, samples: r.samples, message: r.message })
            })
            .collect(),
    }
}

impl IngesterClient {
    /// Sends a push request already encoded (see [`crate::wire`]).
    pub async fn push_encoded(&self, req: EncodedPush) -> Result<PushOutcome, ServiceError> {
        let call = async {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone());
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(format!("transport: {e}")))?;
            let path = http::uri::PathAndQuery::from_static("/cairn.ingester.v1.Ingester/Push");
            grpc.unary(self.request(req), path, PushCodec).await
        };
        let resp = with_deadline(self.timeout, call).await.map_err(|s| self.error(s))?.into_inner();
        Ok(outcome_from_proto(resp))
    }
}

/// The same encoding as a replicated write, for one ingester.
#[async_trait]
impl Pusher for IngesterClient {
    async fn push(&self, tenant: &TenantId, batch: PushBatch) -> Result<PushOutcome, ServiceError> {
        let mut parts = vec![wire::encode_head(tenant, &batch.metadata)];
        parts.extend(batch.series.iter().map(wire::encode_series));
        self.push_encoded(EncodedPush { parts }).await
    }
}

#[async_trait]
impl Queryable for IngesterClient {
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
        let msg = pb::SelectRequest {
            tenant: tenant.as_str().to_owned(),
            matchers: matchers_to_proto(req.matchers),
            start: req.start,
            end: req.end,
            max_series: req.max_series as u64,
            max_samples: req.max_samples as u64,
            latest_only: req.latest_only,
        };
        let resp = with_deadline(self.timeout, self.rpc().select(self.request(msg)))
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        let mut out = Vec::with_capacity(resp.series.len());
        for ts in resp.series {
            req.charge(ts.samples.len())?;
            out.push(Series {
                labels: labels_from_proto(ts.labels),
                samples: ts.samples.into_iter().map(|s| Sample::new(s.timestamp, s.value)).collect(),
            });
        }
        Ok(out)
    }

    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError> {
        let msg = Self::labels_request(tenant, req);
        let resp = with_deadline(self.timeout, self.rpc().series(self.request(msg)))
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(resp.series.into_iter().map(|s| labels_from_proto(s.labels)).collect())
    }

    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError> {
        let msg = Self::labels_request(tenant, req);
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
        let msg = pb::LabelValuesRequest { request: Some(Self::labels_request(tenant, req)), name: name.to_owned() };
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
        let mut out: BTreeMap<String, Vec<MetricMetadata>> = BTreeMap::new();
        for m in resp.metadata {
            let md = MetricMetadata {
                metric_family: m.metric_family_name,
                kind: MetricType::from_proto(m.r#type),
                help: m.help,
                unit: m.unit,
            };
            let list = out.entry(md.metric_family.clone()).or_default();
            if !list.contains(&md) {
                list.push(md);
            }
        }
        Ok(out)
    }
}
