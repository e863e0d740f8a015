//! The ingester's gRPC service (`cairn.ingester.v1.Ingester`).

use cairn_common::push::Pusher;
use cairn_common::push::{MetricMetadata, MetricType, PushBatch, PushSeries, RejectReason};
use cairn_common::status::ServiceError;
use cairn_common::storage::{LabelsRequest as LabelsReq, Queryable, SelectRequest as SelectReq};
use cairn_common::{Label, Labels, MatchOp, Matcher, Sample, TenantId};
use cairn_proto::ingester::ingester_server::{Ingester as IngesterRpc, IngesterServer};
use cairn_proto::ingester::{
    LabelSet, LabelValuesRequest, LabelsRequest, MetadataRequest, MetadataResponse, PushRequest, PushResponse,
    Rejection, SelectRequest, SelectResponse, SeriesResponse, StringsResponse, matcher,
};
use cairn_proto::prometheus;
use tonic::{Request, Response, Status};

use crate::Ingester;

/// Serves pushes from remote distributors.
#[derive(Debug, Clone)]
pub struct IngesterService {
    ingester: Ingester,
}

pub fn service(ingester: Ingester) -> IngesterServer<IngesterService> {
    IngesterServer::new(IngesterService { ingester })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(usize::MAX)
}

fn tenant(s: &str) -> Result<TenantId, ServiceError> {
    TenantId::new(s).map_err(|e| ServiceError::bad_data(e.to_string()))
}

/// Converts matchers sent by a querier; a bad regex is the caller's error.
pub fn matchers_from_proto(ms: Vec<cairn_proto::ingester::Matcher>) -> Result<Vec<Matcher>, ServiceError> {
    ms.into_iter()
        .map(|m| {
            let op = match matcher::Type::try_from(m.r#type) {
                Ok(matcher::Type::Eq) => MatchOp::Equal,
                Ok(matcher::Type::Neq) => MatchOp::NotEqual,
                Ok(matcher::Type::Re) => MatchOp::Regex,
                Ok(matcher::Type::Nre) => MatchOp::NotRegex,
                Err(_) => return Err(ServiceError::bad_data(format!("unknown matcher type {}", m.r#type))),
            };
            Matcher::new(op, m.name, m.value).map_err(|e| ServiceError::bad_data(format!("bad regex: {e}")))
        })
        .collect()
}

fn labels_to_proto(labels: &Labels) -> Vec<prometheus::Label> {
    labels.iter().map(|l| prometheus::Label { name: l.name.clone(), value: l.value.clone() }).collect()
}

struct LabelsQuery {
    tenant: TenantId,
    matcher_sets: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
    limit: usize,
}

impl LabelsQuery {
    fn from_proto(req: LabelsRequest) -> Result<Self, ServiceError> {
        Ok(Self {
            tenant: tenant(&req.tenant)?,
            matcher_sets: req
                .matcher_sets
                .into_iter()
                .map(|s| matchers_from_proto(s.matchers))
                .collect::<Result<_, _>>()?,
            start: req.start,
            end: req.end,
            limit: req.limit as usize,
        })
    }

    fn request(&self) -> LabelsReq<'_> {
        LabelsReq { matcher_sets: &self.matcher_sets, start: self.start, end: self.end, limit: self.limit, ctx: None }
    }
}

/// Converts a push request. Labels arrive validated; they are still sorted
/// and de-duplicated here because a gRPC peer is not trusted to have done it.
pub fn batch_from_proto(req: PushRequest) -> Result<(TenantId, PushBatch), ServiceError> {
    let tenant = TenantId::new(&req.tenant).map_err(|e| ServiceError::bad_data(e.to_string()))?;
    let series = req
        .timeseries
        .into_iter()
        .map(|ts| PushSeries {
            labels: Labels::new(ts.labels.into_iter().map(|l| Label { name: l.name, value: l.value }).collect()),
            samples: ts.samples.into_iter().map(|s| Sample::new(s.timestamp, s.value)).collect(),
        })
        .collect();
    let metadata = req
        .metadata
        .into_iter()
        .map(|m| MetricMetadata {
            metric_family: m.metric_family_name,
            kind: MetricType::from_proto(m.r#type),
            help: m.help,
            unit: m.unit,
        })
        .collect();
    Ok((tenant, PushBatch { series, metadata }))
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
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let (tenant, batch) = batch_from_proto(request.into_inner())?;
        let outcome = self.ingester.push(&tenant, batch).await?;
        Ok(Response::new(PushResponse {
            samples_appended: outcome.samples_appended,
            series_created: outcome.series_created,
            rejections: outcome
                .rejections
                .into_iter()
                .map(|r| Rejection { reason: r.reason.as_str().to_owned(), samples: r.samples, message: r.message })
                .collect(),
        }))
    }

    async fn select(&self, request: Request<SelectRequest>) -> Result<Response<SelectResponse>, Status> {
        self.ready()?;
        let req = request.into_inner();
        let tenant = tenant(&req.tenant)?;
        let matchers = matchers_from_proto(req.matchers)?;
        let select = SelectReq {
            matchers: &matchers,
            start: req.start,
            end: req.end,
            max_series: req.max_series as usize,
            max_samples: req.max_samples as usize,
            latest_only: req.latest_only,
            ctx: None,
        };
        let series = self.ingester.select(&tenant, &select).await?;
        Ok(Response::new(SelectResponse {
            series: series
                .into_iter()
                .map(|s| prometheus::TimeSeries {
                    labels: labels_to_proto(&s.labels),
                    samples: s.samples.into_iter().map(|x| prometheus::Sample { value: x.v, timestamp: x.t }).collect(),
                    ..Default::default()
                })
                .collect(),
        }))
    }

    async fn series(&self, request: Request<LabelsRequest>) -> Result<Response<SeriesResponse>, Status> {
        self.ready()?;
        let q = LabelsQuery::from_proto(request.into_inner())?;
        let series = self.ingester.series(&q.tenant, &q.request()).await?;
        Ok(Response::new(SeriesResponse {
            series: series.iter().map(|l| LabelSet { labels: labels_to_proto(l) }).collect(),
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
        let tenant = tenant(&req.tenant)?;
        let by_family = self.ingester.metadata(&tenant, req.metric.as_deref()).await?;
        Ok(Response::new(MetadataResponse {
            metadata: by_family
                .into_values()
                .flatten()
                .map(|m| prometheus::MetricMetadata {
                    r#type: m.kind.to_proto(),
                    metric_family_name: m.metric_family,
                    help: m.help,
                    unit: m.unit,
                })
                .collect(),
        }))
    }
}

/// Parses a rejection reason sent by a remote ingester.
pub fn reason_from_proto(s: &str) -> Option<RejectReason> {
    RejectReason::parse(s)
}
