//! The ingester's gRPC service (`cairn.ingester.v1.Ingester`).

use cairn_common::push::Pusher;
use cairn_common::push::{MetricMetadata, MetricType, PushBatch, PushSeries, RejectReason};
use cairn_common::status::ServiceError;
use cairn_common::{Label, Labels, Sample, TenantId};
use cairn_proto::ingester::ingester_server::{Ingester as IngesterRpc, IngesterServer};
use cairn_proto::ingester::{PushRequest, PushResponse, Rejection};
use tonic::{Request, Response, Status};

use crate::Ingester;

/// Serves pushes from remote distributors.
#[derive(Debug, Clone)]
pub struct IngesterService {
    ingester: Ingester,
}

pub fn service(ingester: Ingester) -> IngesterServer<IngesterService> {
    IngesterServer::new(IngesterService { ingester }).max_decoding_message_size(64 << 20)
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
}

/// Parses a rejection reason sent by a remote ingester.
pub fn reason_from_proto(s: &str) -> Option<RejectReason> {
    RejectReason::parse(s)
}
