//! WAL and checkpoint record bodies.
//!
//! Every body starts with a type byte. Integers are LEB128 varints (signed
//! ones zig-zag), floats are their 8 raw bits little-endian, strings are a
//! varint length and UTF-8 bytes.

use cairn_common::push::{MetricMetadata, MetricType};

use crate::head::packed::PackedLabels;

pub const SERIES: u8 = 1;
pub const SAMPLES: u8 = 2;
pub const METADATA: u8 = 3;
/// Checkpoint: the full state of one series.
pub const SERIES_STATE: u8 = 10;
/// Checkpoint: trailer proving the checkpoint is complete.
pub const CHECKPOINT_END: u8 = 11;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0} record")]
pub struct DecodeError(pub &'static str);

pub struct Enc<'a>(pub &'a mut Vec<u8>);

impl Enc<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    pub fn varint(&mut self, v: i64) {
        self.uvarint(((v << 1) ^ (v >> 63)) as u64);
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.uvarint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

pub struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }
    fn err(&self) -> DecodeError {
        DecodeError(self.what)
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.err())?;
        self.buf = rest;
        Ok(b)
    }
    pub fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut out = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(out);
            }
        }
        Err(self.err())
    }
    pub fn varint(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.uvarint()?).map_err(|_| self.err())
    }
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        if self.buf.len() < 8 {
            return Err(self.err());
        }
        let (b, rest) = self.buf.split_at(8);
        self.buf = rest;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_bits(u64::from_le_bytes(a)))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(self.uvarint()?).map_err(|_| self.err())?;
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.err())
    }
}

/// Encodes new series: `(ref, labels)`.
pub fn encode_series<'a>(out: &mut Vec<u8>, series: impl Iterator<Item = (u32, &'a PackedLabels)>) {
    let mut e = Enc(out);
    e.u8(SERIES);
    for (r, labels) in series {
        e.uvarint(u64::from(r));
        e.bytes(labels.as_bytes());
    }
}

pub fn decode_series(body: &[u8], out: &mut Vec<(u32, PackedLabels)>) -> Result<(), DecodeError> {
    let mut d = Dec::new(&body[1..], "series");
    while !d.is_empty() {
        let r = d.u32()?;
        let labels = PackedLabels::from_bytes(d.bytes()?).ok_or(DecodeError("series labels"))?;
        out.push((r, labels));
    }
    Ok(())
}

/// Encodes samples `(ref, t, v)`. Timestamps are stored relative to the
/// first one, which keeps them to a byte or two for one scrape.
pub fn encode_samples(out: &mut Vec<u8>, samples: &[(u32, i64, f64)]) {
    let mut e = Enc(out);
    e.u8(SAMPLES);
    let base = samples.first().map(|s| s.1).unwrap_or(0);
    e.varint(base);
    for &(r, t, v) in samples {
        e.uvarint(u64::from(r));
        e.varint(t.wrapping_sub(base));
        e.f64(v);
    }
}

pub fn decode_samples(body: &[u8], out: &mut Vec<(u32, i64, f64)>) -> Result<(), DecodeError> {
    let mut d = Dec::new(&body[1..], "samples");
    let base = d.varint()?;
    while !d.is_empty() {
        let r = d.u32()?;
        let t = base.wrapping_add(d.varint()?);
        let v = d.f64()?;
        out.push((r, t, v));
    }
    Ok(())
}

pub fn encode_metadata(out: &mut Vec<u8>, metadata: &[MetricMetadata]) {
    let mut e = Enc(out);
    e.u8(METADATA);
    for m in metadata {
        e.bytes(m.metric_family.as_bytes());
        e.u8(m.kind.to_proto() as u8);
        e.bytes(m.help.as_bytes());
        e.bytes(m.unit.as_bytes());
    }
}

pub fn decode_metadata(body: &[u8], out: &mut Vec<MetricMetadata>) -> Result<(), DecodeError> {
    let mut d = Dec::new(&body[1..], "metadata");
    while !d.is_empty() {
        let metric_family = d.str()?.to_owned();
        let kind = MetricType::from_proto(i32::from(d.u8()?));
        let help = d.str()?.to_owned();
        let unit = d.str()?.to_owned();
        out.push(MetricMetadata { metric_family, kind, help, unit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::Labels;

    #[test]
    fn records_round_trip() {
        let l = PackedLabels::new(&Labels::from_pairs([("__name__", "up"), ("job", "a")]));
        let mut buf = Vec::new();
        encode_series(&mut buf, [(3u32, &l), (9, &l)].into_iter());
        let mut got = Vec::new();
        decode_series(&buf, &mut got).expect("decode");
        assert_eq!(got, vec![(3, l.clone()), (9, l)]);

        let samples = vec![(1u32, 1_700_000_000_000i64, 1.5), (2, 1_699_999_999_000, f64::NEG_INFINITY), (1, -5, -0.0)];
        let mut buf = Vec::new();
        encode_samples(&mut buf, &samples);
        let mut got = Vec::new();
        decode_samples(&buf, &mut got).expect("decode");
        assert_eq!(got.len(), 3);
        for (a, b) in samples.iter().zip(&got) {
            assert_eq!((a.0, a.1, a.2.to_bits()), (b.0, b.1, b.2.to_bits()));
        }
        assert!(decode_samples(&buf[..buf.len() - 3], &mut Vec::new()).is_err());

        let md = vec![MetricMetadata {
            metric_family: "up".into(),
            kind: MetricType::Gauge,
            help: "is it up".into(),
            unit: String::new(),
        }];
        let mut buf = Vec::new();
        encode_metadata(&mut buf, &md);
        let mut got = Vec::new();
        decode_metadata(&buf, &mut got).expect("decode");
        assert_eq!(got, md);
    }
}
