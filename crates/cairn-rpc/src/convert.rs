//! Cairn's types to `cairn.ingester.v1` messages and back, for both ends.

use std::collections::BTreeMap;

use cairn_common::chunk::{Chunk, SeriesChunks};
use cairn_common::push::{MetricMetadata, MetricType, PushOutcome, RejectReason, Rejection};
use cairn_common::status::ServiceError;
use cairn_common::storage::{LabelsRequest, SelectRequest, Series};
use cairn_common::{Label, Labels, MatchOp, Matcher, Sample, TenantId};
use cairn_proto::ingester as pb;
use cairn_proto::prometheus;
use prost::Message;

pub fn tenant_from_proto(s: &str) -> Result<TenantId, ServiceError> {
    TenantId::new(s).map_err(|e| ServiceError::bad_data(e.to_string()))
}

pub fn labels_to_proto(labels: &Labels) -> Vec<prometheus::Label> {
    labels.iter().map(|l| prometheus::Label { name: l.name.clone(), value: l.value.clone() }).collect()
}

/// Sorts and de-duplicates: a peer is not trusted to have done it.
pub fn labels_from_proto(labels: Vec<prometheus::Label>) -> Labels {
    Labels::new(labels.into_iter().map(|l| Label { name: l.name, value: l.value }).collect())
}

pub fn matchers_to_proto(ms: &[Matcher]) -> Vec<pb::Matcher> {
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

/// Converts matchers sent by a querier; a bad regex is the caller's error.
pub fn matchers_from_proto(ms: Vec<pb::Matcher>) -> Result<Vec<Matcher>, ServiceError> {
    ms.into_iter()
        .map(|m| {
            let op = match pb::matcher::Type::try_from(m.r#type) {
                Ok(pb::matcher::Type::Eq) => MatchOp::Equal,
                Ok(pb::matcher::Type::Neq) => MatchOp::NotEqual,
                Ok(pb::matcher::Type::Re) => MatchOp::Regex,
                Ok(pb::matcher::Type::Nre) => MatchOp::NotRegex,
                Err(_) => return Err(ServiceError::bad_data(format!("unknown matcher type {}", m.r#type))),
            };
            Matcher::new(op, m.name, m.value).map_err(|e| ServiceError::bad_data(format!("bad regex: {e}")))
        })
        .collect()
}

pub fn metadata_to_proto(m: MetricMetadata) -> prometheus::MetricMetadata {
    prometheus::MetricMetadata {
        r#type: m.kind.to_proto(),
        metric_family_name: m.metric_family,
        help: m.help,
        unit: m.unit,
    }
}

/// Groups metadata by family, each distinct entry once.
pub fn metadata_from_proto(list: Vec<prometheus::MetricMetadata>) -> BTreeMap<String, Vec<MetricMetadata>> {
    let mut out: BTreeMap<String, Vec<MetricMetadata>> = BTreeMap::new();
    for m in list {
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
    out
}

pub fn outcome_to_proto(o: PushOutcome) -> pb::PushResponse {
    pb::PushResponse {
        samples_appended: o.samples_appended,
        series_created: o.series_created,
        rejections: o
            .rejections
            .into_iter()
            .map(|r| pb::Rejection { reason: r.reason.as_str().to_owned(), samples: r.samples, message: r.message })
            .collect(),
    }
}

/// Rejections with a reason this build does not know are dropped.
pub fn outcome_from_proto(resp: pb::PushResponse) -> PushOutcome {
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

pub fn labels_request_to_proto(tenant: &TenantId, req: &LabelsRequest<'_>) -> pb::LabelsRequest {
    pb::LabelsRequest {
        tenant: tenant.as_str().to_owned(),
        matcher_sets: req.matcher_sets.iter().map(|s| pb::MatcherSet { matchers: matchers_to_proto(s) }).collect(),
        start: req.start,
        end: req.end,
        limit: req.limit as u64,
    }
}

/// A labels request as the ingester serves it (see [`LabelsQuery::request`]).
#[derive(Debug)]
pub struct LabelsQuery {
    pub tenant: TenantId,
    pub matcher_sets: Vec<Vec<Matcher>>,
    pub start: i64,
    pub end: i64,
    pub limit: usize,
}

impl LabelsQuery {
    pub fn from_proto(req: pb::LabelsRequest) -> Result<Self, ServiceError> {
        Ok(Self {
            tenant: tenant_from_proto(&req.tenant)?,
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

    pub fn request(&self) -> LabelsRequest<'_> {
        LabelsRequest {
            matcher_sets: &self.matcher_sets,
            start: self.start,
            end: self.end,
            limit: self.limit,
            ctx: None,
        }
    }
}

pub fn select_to_proto(tenant: &TenantId, req: &SelectRequest<'_>) -> pb::SelectRequest {
    pb::SelectRequest {
        tenant: tenant.as_str().to_owned(),
        matchers: matchers_to_proto(req.matchers),
        start: req.start,
        end: req.end,
        max_series: req.max_series as u64,
        max_samples: req.max_samples as u64,
        latest_only: req.latest_only,
        accept_chunks: true,
    }
}

/// A select as the ingester serves it (see [`SelectQuery::request`]).
#[derive(Debug)]
pub struct SelectQuery {
    pub tenant: TenantId,
    pub matchers: Vec<Matcher>,
    pub start: i64,
    pub end: i64,
    pub max_series: usize,
    pub max_samples: usize,
    pub latest_only: bool,
    /// Whether the caller reads chunks (`SelectResponse.chunked`).
    pub accept_chunks: bool,
}

impl SelectQuery {
    pub fn from_proto(req: pb::SelectRequest) -> Result<Self, ServiceError> {
        Ok(Self {
            tenant: tenant_from_proto(&req.tenant)?,
            matchers: matchers_from_proto(req.matchers)?,
            start: req.start,
            end: req.end,
            max_series: req.max_series as usize,
            max_samples: req.max_samples as usize,
            latest_only: req.latest_only,
            accept_chunks: req.accept_chunks,
        })
    }

    pub fn request(&self) -> SelectRequest<'_> {
        SelectRequest {
            matchers: &self.matchers,
            start: self.start,
            end: self.end,
            max_series: self.max_series,
            max_samples: self.max_samples,
            latest_only: self.latest_only,
            ctx: None,
        }
    }
}

fn samples_to_proto(samples: &[Sample]) -> Vec<prometheus::Sample> {
    samples.iter().map(|x| prometheus::Sample { value: x.v, timestamp: x.t }).collect()
}

/// A series' chunks as an ingester sent them. Fails on an encoding this
/// build cannot read, and on loose samples out of order.
pub fn chunked_series_from_proto(s: pb::ChunkedSeries) -> Result<(Labels, SeriesChunks), ServiceError> {
    let mut chunks = Vec::with_capacity(s.chunks.len());
    for c in s.chunks {
        if c.encoding != pb::chunk::Encoding::Xor as i32 {
            return Err(ServiceError::internal(format!("chunk encoding {} is not one this build reads", c.encoding)));
        }
        chunks.push(Chunk { min_t: c.min_time_ms, max_t: c.max_time_ms, data: c.data });
    }
    let samples: Vec<Sample> = s.samples.into_iter().map(|x| Sample::new(x.timestamp, x.value)).collect();
    if samples.windows(2).any(|w| w[0].t >= w[1].t) {
        return Err(ServiceError::internal("an ingester sent loose samples out of order"));
    }
    Ok((labels_from_proto(s.labels), SeriesChunks { chunks, samples }))
}

/// Plain samples, for a caller that did not ask for chunks.
pub fn series_to_proto(labels: &Labels, samples: &[Sample]) -> prometheus::TimeSeries {
    prometheus::TimeSeries { labels: labels_to_proto(labels), samples: samples_to_proto(samples), ..Default::default() }
}

/// The bytes of a `SelectResponse` of plain samples, for a caller that did
/// not ask for chunks.
pub fn samples_response(series: &[Series]) -> bytes::Bytes {
    let resp = pb::SelectResponse {
        series: series.iter().map(|s| series_to_proto(&s.labels, &s.samples)).collect(),
        chunked: Vec::new(),
    };
    bytes::Bytes::from(resp.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use cairn_common::chunk::XorAppender;

    use super::*;

    #[test]
    fn matchers_round_trip_and_bad_ones_are_refused() {
        let ms = vec![
            Matcher::new(MatchOp::Equal, "a", "1").expect("matcher"),
            Matcher::new(MatchOp::NotEqual, "b", "").expect("matcher"),
            Matcher::new(MatchOp::Regex, "c", "x.*").expect("matcher"),
            Matcher::new(MatchOp::NotRegex, "d", "y|z").expect("matcher"),
        ];
        let back = matchers_from_proto(matchers_to_proto(&ms)).expect("converts");
        assert_eq!(back, ms);
        let bad = pb::Matcher { r#type: 9, name: "a".into(), value: "b".into() };
        assert!(matchers_from_proto(vec![bad]).expect_err("unknown type").message.contains("unknown matcher type"));
        let bad = pb::Matcher { r#type: pb::matcher::Type::Re as i32, name: "a".into(), value: "(".into() };
        assert!(matchers_from_proto(vec![bad]).expect_err("bad regex").message.contains("bad regex"));
    }

    #[test]
    fn outcomes_and_metadata_round_trip() {
        let o = PushOutcome {
            samples_appended: 5,
            series_created: 2,
            rejections: vec![Rejection { reason: RejectReason::TooOld, samples: 3, message: "m".into() }],
        };
        assert_eq!(outcome_from_proto(outcome_to_proto(o.clone())), o);
        let md =
            MetricMetadata { metric_family: "up".into(), kind: MetricType::Gauge, help: "h".into(), unit: "".into() };
        let back = metadata_from_proto(vec![metadata_to_proto(md.clone()), metadata_to_proto(md.clone())]);
        assert_eq!(back.get("up"), Some(&vec![md]), "one entry per distinct metadata");
    }

    #[test]
    fn chunked_series_round_trip() {
        let mut app = XorAppender::new();
        app.append(1, 1.0);
        app.append(2, f64::NAN);
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let s = SeriesChunks {
            chunks: vec![Chunk { min_t: 1, max_t: 2, data: Bytes::from(app.finish()) }],
            samples: vec![Sample::new(0, -0.5)],
        };
        let mut buf = Vec::new();
        let pairs = labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes()));
        crate::codec::encode_chunked_series(pairs, &s, &mut buf);
        let decode = |b: &[u8]| pb::SelectResponse::decode(b).expect("decodes").chunked.remove(0);
        let (l, back) = chunked_series_from_proto(decode(&buf)).expect("converts");
        assert_eq!(l, labels);
        assert_eq!(back.chunks, s.chunks);
        assert_eq!(back.samples[0].v.to_bits(), (-0.5f64).to_bits());
        let mut unknown = decode(&buf);
        unknown.chunks[0].encoding = 7;
        assert!(chunked_series_from_proto(unknown).is_err());
    }
}
