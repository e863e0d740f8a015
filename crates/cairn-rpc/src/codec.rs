//! The push codec: a distributor's series encoded once for all replicas,
//! and decoded by the ingester without an intermediate message.
//!
//! A distributor sends each series to `rf` ingesters. Every series of a
//! request is encoded once, as a `PushRequest.timeseries` entry, into one
//! buffer ([`SeriesBuffer`]); the request to each ingester is its head
//! (tenant and metadata) followed by the byte ranges of its series, which is
//! exactly a `cairn.ingester.v1.PushRequest` on the wire. The ingester reads
//! that message straight into a [`PushBatch`] ([`decode_push`]), with the
//! same zero-copy reader as remote write, instead of building prost's
//! message first.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cairn_common::push::{MetricMetadata, MetricType, PushBatch, PushSeries};
use cairn_common::status::ServiceError;
use cairn_common::wire::{self, LEN, Reader, WireError};
use cairn_common::{Label, Labels, TenantId};
use cairn_proto::ingester::PushResponse;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The gRPC path of `Ingester.Push`.
pub const PUSH_PATH: &str = "/cairn.ingester.v1.Ingester/Push";

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

/// Appends one series as a `PushRequest.timeseries` entry (field 2), key
/// included, to `buf`.
fn encode_series(s: &PushSeries, buf: &mut BytesMut) {
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
    buf.reserve(body + 1 + encoded_len_varint(body as u64));
    len_field(2, body, buf);
    for l in s.labels.iter() {
        len_field(1, label_len(&l.name, &l.value), buf);
        str_field(1, &l.name, buf);
        str_field(2, &l.value, buf);
    }
    for x in &s.samples {
        len_field(2, sample_len(x.t), buf);
        encode_key(1, WireType::SixtyFourBit, buf);
        buf.put_f64_le(x.v);
        if x.t != 0 {
            encode_key(2, WireType::Varint, buf);
            encode_varint(x.t as u64, buf);
        }
    }
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

/// The series of one request, each encoded once, back to back.
#[derive(Debug, Default)]
pub struct SeriesBuffer {
    buf: BytesMut,
    /// Where each series ends in `buf`.
    ends: Vec<usize>,
}

impl SeriesBuffer {
    pub fn with_capacity(series: usize) -> Self {
        Self { buf: BytesMut::with_capacity(series * 128), ends: Vec::with_capacity(series) }
    }

    /// Encodes `s`; returns its index.
    pub fn push(&mut self, s: &PushSeries) -> usize {
        encode_series(s, &mut self.buf);
        self.ends.push(self.buf.len());
        self.ends.len() - 1
    }

    /// The encoded series, to share among requests.
    pub fn finish(self) -> EncodedSeries {
        EncodedSeries { bytes: self.buf.freeze(), ends: self.ends.into() }
    }
}

/// Series encoded by a [`SeriesBuffer`], shared by the requests that carry
/// them.
#[derive(Clone, Debug)]
pub struct EncodedSeries {
    bytes: Bytes,
    ends: std::sync::Arc<[usize]>,
}

impl EncodedSeries {
    /// Encoded size of series `i`.
    pub fn len_of(&self, i: usize) -> usize {
        self.range(i).len()
    }

    fn range(&self, i: usize) -> Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        start..self.ends[i]
    }
}

/// A `PushRequest` assembled from a head and some of the encoded series.
#[derive(Clone, Debug)]
pub struct EncodedPush {
    head: Bytes,
    series: EncodedSeries,
    /// Byte ranges of `series` in request order; adjacent series share one.
    ranges: Vec<Range<usize>>,
    len: usize,
}

impl EncodedPush {
    pub fn new(head: Bytes, series: EncodedSeries) -> Self {
        let len = head.len();
        Self { head, series, ranges: Vec::new(), len }
    }

    /// Adds series `i` of the shared buffer.
    pub fn add(&mut self, i: usize) {
        let r = self.series.range(i);
        self.len += r.len();
        match self.ranges.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => self.ranges.push(r),
        }
    }

    /// Every series of the shared buffer, in order.
    pub fn all(head: Bytes, series: EncodedSeries) -> Self {
        let mut p = Self::new(head, series);
        let n = p.series.ends.len();
        if n > 0 {
            p.ranges.push(0..p.series.ends[n - 1]);
            p.len += p.series.ends[n - 1];
        }
        p
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The request as one buffer (tests, and callers without [`PushCodec`]).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len);
        self.write(&mut out);
        out.freeze()
    }

    fn write(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.head);
        for r in &self.ranges {
            dst.put_slice(&self.series.bytes[r.clone()]);
        }
    }
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError(format!("{what} is not valid UTF-8")))
}

/// Reads a `PushRequest`. Labels are sorted and de-duplicated here: a gRPC
/// peer is not trusted to have done it.
pub fn decode_push(buf: &[u8]) -> Result<(TenantId, PushBatch), ServiceError> {
    decode(buf).map_err(|e| ServiceError::bad_data(format!("push request: {e}")))
}

fn decode(buf: &[u8]) -> Result<(TenantId, PushBatch), WireError> {
    let mut tenant = "";
    let mut batch = PushBatch::default();
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                r.expect(wire_type, LEN, "PushRequest.tenant")?;
                tenant = utf8(r.bytes()?, "the tenant")?;
            }
            2 => {
                r.expect(wire_type, LEN, "PushRequest.timeseries")?;
                let raw = wire::decode_v1_series(r.bytes()?)?;
                let mut labels = Vec::with_capacity(raw.labels.len());
                for (n, v) in raw.labels {
                    labels.push(Label {
                        name: utf8(n, "a label name")?.to_owned(),
                        value: utf8(v, "a label value")?.to_owned(),
                    });
                }
                batch.series.push(PushSeries { labels: Labels::new(labels), samples: raw.samples });
            }
            3 => {
                r.expect(wire_type, LEN, "PushRequest.metadata")?;
                let m = wire::decode_v1_metadata(r.bytes()?)?;
                batch.metadata.push(MetricMetadata {
                    metric_family: utf8(m.family, "a metric family name")?.to_owned(),
                    kind: MetricType::from_proto(m.kind),
                    help: utf8(m.help, "a help text")?.to_owned(),
                    unit: utf8(m.unit, "a unit")?.to_owned(),
                });
            }
            _ => r.skip(wire_type)?,
        }
    }
    let tenant = TenantId::new(tenant).map_err(|e| WireError(e.to_string()))?;
    Ok((tenant, batch))
}

/// The client's codec for `Push`: sends an [`EncodedPush`] as it is and
/// decodes a `PushResponse`.
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
        dst.reserve(item.len());
        item.write(dst);
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

/// The server's codec for `Push`: hands the request's bytes over as they
/// are (the ingester decodes them with [`decode_push`] off the async
/// runtime) and encodes a `PushResponse`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PushServerCodec;

#[derive(Debug)]
pub struct ResponseEncoder;

#[derive(Debug)]
pub struct RawDecoder;

impl Encoder for ResponseEncoder {
    type Item = PushResponse;
    type Error = Status;

    fn encode(&mut self, item: PushResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("encoding a push response: {e}")))
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for PushServerCodec {
    type Encode = PushResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

#[cfg(test)]
mod tests;
