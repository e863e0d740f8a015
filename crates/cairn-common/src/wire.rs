//! A zero-copy reader for remote write bodies, and for the ingester's push
//! requests, which carry the same `prometheus.TimeSeries`.
//!
//! prost decodes every label into an owned `String` and rejects invalid
//! UTF-8 without saying where it was. This reader borrows names and values
//! from the decompressed buffer, so validation can name the offending series
//! and label, and nothing is allocated for data that is then rejected.
//! Field numbers are those of `proto/prometheus/*.proto` and
//! `proto/io/prometheus/write/v2/types.proto`; tests cross-check against the
//! prost types generated from those files.

use crate::Sample;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decoding protobuf: {0}")]
pub struct WireError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(what.into()))
}

pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const FIXED32: u8 = 5;

/// Reads protobuf fields from a buffer, borrowing from it.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn done(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn varint(&mut self) -> Result<u64, WireError> {
        let mut out = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return err("truncated varint");
            };
            self.buf = rest;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(out);
            }
        }
        err("varint longer than 10 bytes")
    }

    pub fn key(&mut self) -> Result<(u32, u8), WireError> {
        let k = self.varint()?;
        let field = u32::try_from(k >> 3).map_err(|_| WireError("field number out of range".into()))?;
        if field == 0 {
            return err("field number 0");
        }
        Ok((field, (k & 7) as u8))
    }

    pub fn fixed64(&mut self) -> Result<u64, WireError> {
        if self.buf.len() < 8 {
            return err("truncated fixed64");
        }
        let (b, rest) = self.buf.split_at(8);
        self.buf = rest;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| WireError("length out of range".into()))?;
        if self.buf.len() < n {
            return err("length-delimited field runs past the end of its message");
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    pub fn skip(&mut self, wire: u8) -> Result<(), WireError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed64().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => {
                if self.buf.len() < 4 {
                    return err("truncated fixed32");
                }
                self.buf = &self.buf[4..];
                Ok(())
            }
            w => err(format!("unsupported wire type {w}")),
        }
    }

    /// Reads a field of the expected wire type, or fails naming it.
    pub fn expect(&self, wire: u8, want: u8, what: &str) -> Result<(), WireError> {
        if wire != want {
            return err(format!("{what} has wire type {wire}, expected {want}"));
        }
        Ok(())
    }
}

/// A label as raw bytes; UTF-8 is checked by validation.
pub type RawLabel<'a> = (&'a [u8], &'a [u8]);

/// One series of a request, borrowing from the request buffer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawSeries<'a> {
    pub labels: Vec<RawLabel<'a>>,
    pub samples: Vec<Sample>,
    pub histograms: u32,
    pub exemplars: u32,
    /// Remote write 2.0 per-series metadata: (type, help, unit).
    pub metadata: Option<(i32, &'a [u8], &'a [u8])>,
}

/// Remote write 1.0 metadata entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMetadata<'a> {
    pub kind: i32,
    pub family: &'a [u8],
    pub help: &'a [u8],
    pub unit: &'a [u8],
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawRequest<'a> {
    pub series: Vec<RawSeries<'a>>,
    pub metadata: Vec<RawMetadata<'a>>,
}

/// Decodes a `prometheus.WriteRequest`.
pub fn decode_v1(buf: &[u8]) -> Result<RawRequest<'_>, WireError> {
    let mut req = RawRequest::default();
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(wire, LEN, "WriteRequest.timeseries")?;
                req.series.push(decode_v1_series(r.bytes()?)?);
            }
            3 => {
                r.expect(wire, LEN, "WriteRequest.metadata")?;
                req.metadata.push(decode_v1_metadata(r.bytes()?)?);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(req)
}

/// Decodes one `prometheus.TimeSeries`.
pub fn decode_v1_series(buf: &[u8]) -> Result<RawSeries<'_>, WireError> {
    let mut s = RawSeries::default();
    (s.exemplars, s.histograms) = decode_v1_series_into(buf, &mut s.labels, &mut s.samples)?;
    Ok(s)
}

/// Decodes one `prometheus.TimeSeries`, appending its labels and samples
/// to buffers a caller reuses for many series (no allocation per series).
/// Returns how many exemplars and histograms it carried.
pub fn decode_v1_series_into<'a>(
    buf: &'a [u8],
    labels: &mut Vec<RawLabel<'a>>,
    samples: &mut Vec<Sample>,
) -> Result<(u32, u32), WireError> {
    let (mut exemplars, mut histograms) = (0, 0);
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(wire, LEN, "TimeSeries.labels")?;
                labels.push(decode_label(r.bytes()?)?);
            }
            2 => {
                r.expect(wire, LEN, "TimeSeries.samples")?;
                samples.push(decode_sample(r.bytes()?)?);
            }
            3 => {
                r.expect(wire, LEN, "TimeSeries.exemplars")?;
                r.bytes()?;
                exemplars += 1;
            }
            4 => {
                r.expect(wire, LEN, "TimeSeries.histograms")?;
                r.bytes()?;
                histograms += 1;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok((exemplars, histograms))
}

fn decode_label(buf: &[u8]) -> Result<RawLabel<'_>, WireError> {
    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(wire, LEN, "Label.name")?;
                name = r.bytes()?;
            }
            2 => {
                r.expect(wire, LEN, "Label.value")?;
                value = r.bytes()?;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok((name, value))
}

/// Decodes a sample message (v1 `Sample` and v2 `Sample` share fields 1 and 2).
fn decode_sample(buf: &[u8]) -> Result<Sample, WireError> {
    let mut s = Sample::new(0, 0.0);
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(wire, FIXED64, "Sample.value")?;
                s.v = f64::from_bits(r.fixed64()?);
            }
            2 => {
                r.expect(wire, VARINT, "Sample.timestamp")?;
                s.t = r.varint()? as i64;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(s)
}

/// Decodes one `prometheus.MetricMetadata`.
pub fn decode_v1_metadata(buf: &[u8]) -> Result<RawMetadata<'_>, WireError> {
    let mut m = RawMetadata { kind: 0, family: &[], help: &[], unit: &[] };
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(wire, VARINT, "MetricMetadata.type")?;
                m.kind = r.varint()? as i32;
            }
            2 => {
                r.expect(wire, LEN, "MetricMetadata.metric_family_name")?;
                m.family = r.bytes()?;
            }
            4 => {
                r.expect(wire, LEN, "MetricMetadata.help")?;
                m.help = r.bytes()?;
            }
            5 => {
                r.expect(wire, LEN, "MetricMetadata.unit")?;
                m.unit = r.bytes()?;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(m)
}

/// Decodes an `io.prometheus.write.v2.Request`, resolving symbol references.
pub fn decode_v2(buf: &[u8]) -> Result<RawRequest<'_>, WireError> {
    // Symbols may come after the series that use them: collect both first.
    let mut symbols: Vec<&[u8]> = Vec::new();
    let mut series_bufs: Vec<&[u8]> = Vec::new();
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            4 => {
                r.expect(wire, LEN, "Request.symbols")?;
                symbols.push(r.bytes()?);
            }
            5 => {
                r.expect(wire, LEN, "Request.timeseries")?;
                series_bufs.push(r.bytes()?);
            }
            _ => r.skip(wire)?,
        }
    }
    if symbols.first().is_some_and(|s| !s.is_empty()) {
        return err("symbols[0] must be the empty string");
    }
    let sym = |i: u64| -> Result<&[u8], WireError> {
        usize::try_from(i)
            .ok()
            .and_then(|i| symbols.get(i).copied())
            .ok_or_else(|| WireError(format!("symbol reference {i} is out of range ({} symbols)", symbols.len())))
    };
    let mut req = RawRequest { series: Vec::with_capacity(series_bufs.len()), metadata: Vec::new() };
    for (i, sb) in series_bufs.into_iter().enumerate() {
        let mut s = RawSeries::default();
        let mut refs: Vec<u64> = Vec::new();
        let mut r = Reader::new(sb);
        while !r.done() {
            let (field, wire) = r.key()?;
            match field {
                1 if wire == LEN => {
                    let mut p = Reader::new(r.bytes()?);
                    while !p.done() {
                        refs.push(p.varint()?);
                    }
                }
                1 => {
                    r.expect(wire, VARINT, "TimeSeries.labels_refs")?;
                    refs.push(r.varint()?);
                }
                2 => {
                    r.expect(wire, LEN, "TimeSeries.samples")?;
                    s.samples.push(decode_sample(r.bytes()?)?);
                }
                3 => {
                    r.expect(wire, LEN, "TimeSeries.histograms")?;
                    r.bytes()?;
                    s.histograms += 1;
                }
                4 => {
                    r.expect(wire, LEN, "TimeSeries.exemplars")?;
                    r.bytes()?;
                    s.exemplars += 1;
                }
                5 => {
                    r.expect(wire, LEN, "TimeSeries.metadata")?;
                    let (kind, help, unit) = decode_v2_metadata(r.bytes()?)?;
                    s.metadata = Some((kind, sym(help)?, sym(unit)?));
                }
                _ => r.skip(wire)?,
            }
        }
        if !refs.len().is_multiple_of(2) {
            return err(format!("timeseries {i} has an odd number of label references"));
        }
        s.labels.reserve(refs.len() / 2);
        for pair in refs.chunks_exact(2) {
            s.labels.push((sym(pair[0])?, sym(pair[1])?));
        }
        req.series.push(s);
    }
    Ok(req)
}

fn decode_v2_metadata(buf: &[u8]) -> Result<(i32, u64, u64), WireError> {
    let (mut kind, mut help, mut unit) = (0i32, 0u64, 0u64);
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(wire, VARINT, "Metadata.type")?;
                kind = r.varint()? as i32;
            }
            3 => {
                r.expect(wire, VARINT, "Metadata.help_ref")?;
                help = r.varint()?;
            }
            4 => {
                r.expect(wire, VARINT, "Metadata.unit_ref")?;
                unit = r.varint()?;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok((kind, help, unit))
}

#[cfg(test)]
mod tests;
