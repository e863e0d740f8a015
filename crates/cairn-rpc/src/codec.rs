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
use cairn_common::TenantId;
use cairn_common::chunk::{Chunk, SeriesChunks};
use cairn_common::push::{MetricMetadata, MetricType, PushBatch, PushSeries, SeriesInput};
use cairn_common::status::ServiceError;
use cairn_common::wire::{self, LEN, RawLabel, Reader, WireError};
use cairn_proto::ingester::PushResponse;
use prost::Message;
use prost::encoding::encoded_len_varint;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The gRPC path of `Ingester.Push`.
pub const PUSH_PATH: &str = "/cairn.ingester.v1.Ingester/Push";

/// The gRPC path of `Ingester.Select`.
pub const SELECT_PATH: &str = "/cairn.ingester.v1.Ingester/Select";

// The series are encoded by hand into a `Vec<u8>` sized exactly
// beforehand: going through `BufMut` (a capacity check and a call per
// label string and per varint byte) cost several times as much.

/// The key byte of field `tag` (below 16) with wire type `wire`.
const fn key(tag: u8, wire: u8) -> u8 {
    (tag << 3) | wire
}

const KEY_LEN_DELIMITED: u8 = 2;
const KEY_FIXED64: u8 = 1;
const KEY_VARINT: u8 = 0;

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(tag: u8, len: usize, out: &mut Vec<u8>) {
    out.push(key(tag, KEY_LEN_DELIMITED));
    put_varint(len as u64, out);
}

fn str_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { nested_len(s.len()) }
}

fn str_field(tag: u8, s: &str, out: &mut Vec<u8>) {
    if !s.is_empty() {
        len_field(tag, s.len(), out);
        out.extend_from_slice(s.as_bytes());
    }
}

fn label_len(name: &str, value: &str) -> usize {
    str_field_len(name) + str_field_len(value)
}

fn sample_len(t: i64) -> usize {
    1 + 8 + varint_field_len(t)
}

/// The size of a length-delimited field whose key takes one byte and whose
/// body takes `body` bytes.
fn nested_len(body: usize) -> usize {
    1 + encoded_len_varint(body as u64) + body
}

/// The size of one series' `prometheus.TimeSeries` body.
fn series_body_len(s: &PushSeries) -> usize {
    s.labels.iter().map(|l| nested_len(label_len(&l.name, &l.value))).sum::<usize>()
        + s.samples.iter().map(|x| nested_len(sample_len(x.t))).sum::<usize>()
}

/// The size [`encode_series`] appends for `s`.
pub fn encoded_series_len(s: &PushSeries) -> usize {
    nested_len(series_body_len(s))
}

/// Appends one series as a `PushRequest.timeseries` entry (field 2), key
/// included, to `out`.
fn encode_series(s: &PushSeries, out: &mut Vec<u8>) {
    // prometheus.TimeSeries: labels = 1 (Label: name = 1, value = 2),
    // samples = 2 (Sample: value = 1 double, timestamp = 2 int64).
    let body = series_body_len(s);
    out.reserve(nested_len(body));
    len_field(2, body, out);
    for l in s.labels.iter() {
        len_field(1, label_len(&l.name, &l.value), out);
        str_field(1, &l.name, out);
        str_field(2, &l.value, out);
    }
    for x in &s.samples {
        put_sample(2, x, out);
    }
}

/// Appends `x` as a `prometheus.Sample` field with tag `tag`: the value
/// always (so that -0.0 keeps its sign), the timestamp unless 0.
fn put_sample(tag: u8, x: &cairn_common::Sample, out: &mut Vec<u8>) {
    len_field(tag, sample_len(x.t), out);
    out.push(key(1, KEY_FIXED64));
    out.extend_from_slice(&x.v.to_le_bytes());
    varint_field(2, x.t, out);
}

fn varint_field_len(v: i64) -> usize {
    if v == 0 { 0 } else { 1 + encoded_len_varint(v as u64) }
}

fn varint_field(tag: u8, v: i64, out: &mut Vec<u8>) {
    if v != 0 {
        out.push(key(tag, KEY_VARINT));
        put_varint(v as u64, out);
    }
}

/// Appends one series as a `SelectResponse.chunked` entry (field 2) to
/// `out` (a `cairn.ingester.v1.ChunkedSeries`), written straight from an
/// ingester's label bytes and chunks; `convert::chunked_series_from_proto`
/// reads it. `labels` are name/value pairs in label order.
pub fn encode_chunked_series<'a>(
    labels: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    s: &SeriesChunks,
    out: &mut Vec<u8>,
) {
    // cairn.ingester.v1.ChunkedSeries: labels = 1 (prometheus.Label),
    // chunks = 2 (Chunk: min_time_ms = 1, max_time_ms = 2, encoding = 3,
    // XOR = 0 and so omitted, data = 4), samples = 3 (prometheus.Sample).
    let bytes_len = |b: &[u8]| if b.is_empty() { 0 } else { nested_len(b.len()) };
    let label_len = |n: &[u8], v: &[u8]| bytes_len(n) + bytes_len(v);
    let chunk_len = |c: &Chunk| varint_field_len(c.min_t) + varint_field_len(c.max_t) + bytes_len(&c.data);
    let body = labels.clone().map(|(n, v)| nested_len(label_len(n, v))).sum::<usize>()
        + s.chunks.iter().map(|c| nested_len(chunk_len(c))).sum::<usize>()
        + s.samples.iter().map(|x| nested_len(sample_len(x.t))).sum::<usize>();
    out.reserve(nested_len(body));
    len_field(2, body, out);
    for (n, v) in labels {
        len_field(1, label_len(n, v), out);
        for (tag, b) in [(1, n), (2, v)] {
            if !b.is_empty() {
                len_field(tag, b.len(), out);
                out.extend_from_slice(b);
            }
        }
    }
    for c in &s.chunks {
        len_field(2, chunk_len(c), out);
        varint_field(1, c.min_t, out);
        varint_field(2, c.max_t, out);
        if !c.data.is_empty() {
            len_field(4, c.data.len(), out);
            out.extend_from_slice(&c.data);
        }
    }
    for x in &s.samples {
        put_sample(3, x, out);
    }
}

/// The fields of a `PushRequest` other than the series: the tenant and the
/// metadata, encoded once per request.
pub fn encode_head(tenant: &TenantId, metadata: &[MetricMetadata]) -> Bytes {
    let mut buf = Vec::new();
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
    Bytes::from(buf)
}

/// The series of one request, each encoded once, back to back.
#[derive(Debug, Default)]
pub struct SeriesBuffer {
    buf: Vec<u8>,
    /// Where each series ends in `buf`.
    ends: Vec<usize>,
}

impl SeriesBuffer {
    /// A buffer for exactly `series`, allocated once.
    pub fn for_series(series: &[PushSeries]) -> Self {
        let bytes = series.iter().map(encoded_series_len).sum();
        Self { buf: Vec::with_capacity(bytes), ends: Vec::with_capacity(series.len()) }
    }

    /// Encodes `s`; returns its index.
    pub fn push(&mut self, s: &PushSeries) -> usize {
        encode_series(s, &mut self.buf);
        self.ends.push(self.buf.len());
        self.ends.len() - 1
    }

    /// The encoded series, to share among requests.
    pub fn finish(self) -> EncodedSeries {
        EncodedSeries { bytes: Bytes::from(self.buf), ends: self.ends.into() }
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

/// Reads a `PushRequest` into an owned batch. Labels are sorted and
/// de-duplicated here: a gRPC peer is not trusted to have done it.
pub fn decode_push(buf: &[u8]) -> Result<(TenantId, PushBatch), ServiceError> {
    let push = decode_push_borrowed(buf)?;
    let mut series = Vec::with_capacity(push.series().len());
    for s in push.series() {
        series.push(PushSeries { labels: s.to_labels()?, samples: s.samples.to_vec() });
    }
    Ok((push.tenant, PushBatch { series, metadata: push.metadata }))
}

/// A `PushRequest` whose label names and values stay in the request's
/// bytes: a series the ingester already holds is found by them and never
/// copied (nor checked for UTF-8: see [`SeriesInput::label_pairs`]). The
/// series' labels and samples sit in two buffers for the whole request,
/// not one allocation each.
#[derive(Debug)]
pub struct BorrowedPush<'a> {
    pub tenant: TenantId,
    pub metadata: Vec<MetricMetadata>,
    labels: Vec<RawLabel<'a>>,
    samples: Vec<cairn_common::Sample>,
    /// Where each series' labels and samples end in the buffers.
    ends: Vec<(usize, usize)>,
}

impl BorrowedPush<'_> {
    /// The series, in request order.
    pub fn series(&self) -> impl ExactSizeIterator<Item = BorrowedSeries<'_>> {
        let mut start = (0, 0);
        self.ends.iter().map(move |&(labels, samples)| {
            let s = BorrowedSeries { labels: &self.labels[start.0..labels], samples: &self.samples[start.1..samples] };
            start = (labels, samples);
            s
        })
    }
}

/// One series of a [`BorrowedPush`]; its pairs are in
/// [`cairn_common::Labels`] order.
#[derive(Clone, Copy, Debug)]
pub struct BorrowedSeries<'a> {
    labels: &'a [RawLabel<'a>],
    samples: &'a [cairn_common::Sample],
}

impl SeriesInput for BorrowedSeries<'_> {
    fn label_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.labels.iter().copied()
    }

    fn samples(&self) -> &[cairn_common::Sample] {
        self.samples
    }
}

/// [`decode_push`] without copying labels (see [`BorrowedPush`]).
pub fn decode_push_borrowed(buf: &[u8]) -> Result<BorrowedPush<'_>, ServiceError> {
    decode(buf).map_err(|e| ServiceError::bad_data(format!("push request: {e}")))
}

/// The tenant a push request names, read without decoding the rest (its
/// series are skipped by their length prefixes); `None` if the request
/// is malformed or names none, which the full decode then reports.
pub fn push_tenant(buf: &[u8]) -> Option<&str> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire_type) = r.key().ok()?;
        if field == 1 && wire_type == LEN {
            return std::str::from_utf8(r.bytes().ok()?).ok();
        }
        r.skip(wire_type).ok()?;
    }
    None
}

fn decode(buf: &[u8]) -> Result<BorrowedPush<'_>, WireError> {
    let mut tenant = "";
    let (mut metadata, mut labels, mut samples, mut ends) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // One series' labels as read, before they are sorted.
    let mut raw = Vec::new();
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
                raw.clear();
                wire::decode_v1_series_into(r.bytes()?, &mut raw, &mut samples)?;
                cairn_common::labels::normalize_by(&mut raw, |p| *p);
                labels.extend_from_slice(&raw);
                ends.push((labels.len(), samples.len()));
            }
            3 => {
                r.expect(wire_type, LEN, "PushRequest.metadata")?;
                let m = wire::decode_v1_metadata(r.bytes()?)?;
                metadata.push(MetricMetadata {
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
    Ok(BorrowedPush { tenant, metadata, labels, samples, ends })
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

/// The server's codec for `Select`: decodes the `SelectRequest` with prost
/// and sends a response the ingester encoded itself (see
/// [`encode_chunked_series`]) as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct SelectServerCodec;

#[derive(Debug)]
pub struct RawResponseEncoder;

#[derive(Debug)]
pub struct SelectRequestDecoder;

impl Encoder for RawResponseEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for SelectRequestDecoder {
    type Item = cairn_proto::ingester::SelectRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        Self::Item::decode(src).map(Some).map_err(|e| Status::invalid_argument(format!("decoding a select: {e}")))
    }
}

impl Codec for SelectServerCodec {
    type Encode = Bytes;
    type Decode = cairn_proto::ingester::SelectRequest;
    type Encoder = RawResponseEncoder;
    type Decoder = SelectRequestDecoder;

    fn encoder(&mut self) -> RawResponseEncoder {
        RawResponseEncoder
    }

    fn decoder(&mut self) -> SelectRequestDecoder {
        SelectRequestDecoder
    }
}

#[cfg(test)]
mod tests;
