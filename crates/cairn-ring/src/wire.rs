//! Push requests encoded once and shared by every replica.
//!
//! A distributor sends each series to `rf` ingesters. Instead of building
//! and encoding a protobuf message per ingester, each series is encoded
//! once as a `prometheus.TimeSeries` (straight from the validated batch,
//! without copying its labels), and each ingester's request is the
//! concatenation of its series' bytes: on the wire this is exactly a
//! `cairn.ingester.v1.PushRequest`, so the ingester decodes it as usual.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cairn_common::TenantId;
use cairn_common::push::{MetricMetadata, PushSeries};
use cairn_proto::ingester::PushResponse;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

fn len_field(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn str_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { prost::encoding::key_len(tag) + encoded_len_varint(s.len() as u64) + s.len() }
}

fn str_field(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        len_field(tag, s.len(), buf);
        buf.put_slice(s.as_bytes());
    }
}

/// One series as a `PushRequest.timeseries` entry (field 2), key included.
pub fn encode_series(s: &PushSeries) -> Bytes {
    // prometheus.TimeSeries: labels = 1 (Label: name = 1, value = 2),
    // samples = 2 (Sample: value = 1 double, timestamp = 2 int64).
    let label_len = |name: &str, value: &str| str_field_len(1, name) + str_field_len(2, value);
    let sample_len = |t: i64| {
        let v = 1 + 8;
        let ts = if t == 0 { 0 } else { 1 + encoded_len_varint(t as u64) };
        v + ts
    };
    let mut body = 0;
    for l in s.labels.iter() {
        let n = label_len(&l.name, &l.value);
        body += 1 + encoded_len_varint(n as u64) + n;
    }
    for x in &s.samples {
        let n = sample_len(x.t);
        body += 1 + encoded_len_varint(n as u64) + n;
    }
    let mut buf = BytesMut::with_capacity(body + 1 + encoded_len_varint(body as u64));
    len_field(2, body, &mut buf);
    for l in s.labels.iter() {
        len_field(1, label_len(&l.name, &l.value), &mut buf);
        str_field(1, &l.name, &mut buf);
        str_field(2, &l.value, &mut buf);
    }
    for x in &s.samples {
        len_field(2, sample_len(x.t), &mut buf);
        encode_key(1, WireType::SixtyFourBit, &mut buf);
        buf.put_f64_le(x.v);
        if x.t != 0 {
            encode_key(2, WireType::Varint, &mut buf);
            encode_varint(x.t as u64, &mut buf);
        }
    }
    buf.freeze()
}

/// The fields of a `PushRequest` other than the series: the tenant and the
/// metadata, encoded once per request.
pub fn encode_head(tenant: &TenantId, metadata: &[MetricMetadata]) -> Bytes {
    let mut buf = BytesMut::new();
    str_field(1, tenant.as_str(), &mut buf);
    for m in metadata {
        let md = cairn_proto::prometheus::MetricMetadata {
            r#type: m.kind.to_proto(),
            metric_family_name: m.metric_family.clone(),
            help: m.help.clone(),
            unit: m.unit.clone(),
        };
        len_field(3, md.encoded_len(), &mut buf);
        md.encode_raw(&mut buf);
    }
    buf.freeze()
}

/// A `PushRequest` assembled from encoded parts.
#[derive(Clone, Debug, Default)]
pub struct EncodedPush {
    pub parts: Vec<Bytes>,
}

/// Sends [`EncodedPush`] as it is and decodes a `PushResponse`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PushCodec;

#[derive(Debug)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = EncodedPush;
    type Error = Status;

    fn encode(&mut self, item: EncodedPush, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        for p in item.parts {
            dst.put(p);
        }
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = PushResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PushResponse>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        PushResponse::decode(bytes).map(Some).map_err(|e| Status::internal(format!("decoding a push response: {e}")))
    }
}

impl Codec for PushCodec {
    type Encode = EncodedPush;
    type Decode = PushResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

#[cfg(test)]
mod tests {
    use cairn_common::push::MetricType;
    use cairn_common::{Labels, Sample};
    use cairn_proto::ingester::PushRequest;

    use super::*;

    #[test]
    fn parts_decode_as_a_push_request() {
        let series = [
            PushSeries {
                labels: Labels::from_pairs([("__name__", "up"), ("job", "a"), ("empty", "")]),
                samples: vec![Sample::new(0, 1.5), Sample::new(-5, f64::NAN), Sample::new(1_700_000_000_000, -0.0)],
            },
            PushSeries { labels: Labels::from_pairs([("__name__", "x")]), samples: vec![] },
        ];
        let md = vec![MetricMetadata {
            metric_family: "up".into(),
            kind: MetricType::Gauge,
            help: "help".into(),
            unit: String::new(),
        }];
        let tenant = TenantId::new("team-a").expect("tenant");
        let mut body = BytesMut::new();
        body.put(encode_head(&tenant, &md));
        for s in &series {
            body.put(encode_series(s));
        }
        let req = PushRequest::decode(body.freeze()).expect("decodes");
        assert_eq!(req.tenant, "team-a");
        assert_eq!(req.metadata.len(), 1);
        assert_eq!(req.metadata[0].help, "help");
        assert_eq!(req.timeseries.len(), 2);
        let ts = &req.timeseries[0];
        let labels: Vec<(&str, &str)> = ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        let want: Vec<(String, String)> = series[0].labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
        assert_eq!(labels, want.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect::<Vec<_>>());
        let got: Vec<(i64, u64)> = ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect();
        let want: Vec<(i64, u64)> = series[0].samples.iter().map(|s| (s.t, s.v.to_bits())).collect();
        assert_eq!(got, want, "bit-exact values, negative and zero timestamps");
        assert!(req.timeseries[1].samples.is_empty());
    }
}
