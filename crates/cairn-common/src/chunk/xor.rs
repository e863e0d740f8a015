//! Prometheus's XOR chunk: delta-of-delta timestamps, XOR-compressed floats.

use super::bits::{BitReader, BitWriter, write_uvarint, write_varint};
use crate::Sample;

const HEADER: usize = 2;

/// Appends samples, in timestamp order, to one XOR chunk.
///
/// The encoder keeps the state it needs to continue the stream (last
/// timestamp, delta, value and the XOR window), about 40 bytes beside the data.
#[derive(Clone, Debug)]
pub struct XorAppender {
    w: BitWriter,
    num: u16,
    t: i64,
    v: f64,
    t_delta: i64,
    leading: u8,
    trailing: u8,
}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    pub fn new() -> Self {
        let mut w = BitWriter::with_capacity(64);
        w.write_bits(0, 16);
        Self { w, num: 0, t: 0, v: 0.0, t_delta: 0, leading: 0xff, trailing: 0 }
    }

    pub fn num_samples(&self) -> u16 {
        self.num
    }

    /// Encoded size in bytes, header included.
    pub fn len_bytes(&self) -> usize {
        self.w.len()
    }

    /// Timestamp of the last appended sample (meaningless when empty).
    pub fn last_t(&self) -> i64 {
        self.t
    }

    pub fn last_v(&self) -> f64 {
        self.v
    }

    /// The chunk bytes as they stand, valid to decode at any time.
    pub fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// Finishes the chunk, releasing spare capacity.
    pub fn finish(self) -> Vec<u8> {
        let mut b = self.w.into_bytes();
        b.shrink_to_fit();
        b
    }

    /// Appends one sample. The caller guarantees `t` is greater than the
    /// previous timestamp and that the chunk has fewer than `u16::MAX` samples.
    pub fn append(&mut self, t: i64, v: f64) {
        debug_assert!(self.num == 0 || t > self.t, "xor chunk append out of order");
        match self.num {
            0 => {
                write_varint(&mut self.w, t);
                self.w.write_bits(v.to_bits(), 64);
            }
            1 => {
                let delta = t.wrapping_sub(self.t);
                write_uvarint(&mut self.w, delta as u64);
                self.write_value(v);
                self.t_delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.t);
                let dod = delta.wrapping_sub(self.t_delta);
                self.write_dod(dod);
                self.write_value(v);
                self.t_delta = delta;
            }
        }
        self.t = t;
        self.v = v;
        self.num += 1;
        let [hi, lo] = self.num.to_be_bytes();
        let head = self.w.bytes_mut();
        head[0] = hi;
        head[1] = lo;
    }

    fn write_dod(&mut self, dod: i64) {
        let w = &mut self.w;
        if dod == 0 {
            w.write_bit(false);
        } else if fits(dod, 14) {
            w.write_bits(0b10, 2);
            w.write_bits(dod as u64, 14);
        } else if fits(dod, 17) {
            w.write_bits(0b110, 3);
            w.write_bits(dod as u64, 17);
        } else if fits(dod, 20) {
            w.write_bits(0b1110, 4);
            w.write_bits(dod as u64, 20);
        } else {
            w.write_bits(0b1111, 4);
            w.write_bits(dod as u64, 64);
        }
    }

    fn write_value(&mut self, v: f64) {
        let delta = v.to_bits() ^ self.v.to_bits();
        let w = &mut self.w;
        if delta == 0 {
            w.write_bit(false);
            return;
        }
        w.write_bit(true);
        let leading = (delta.leading_zeros() as u8).min(31);
        let trailing = delta.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            // The meaningful bits fit in the previous window: reuse it.
            w.write_bit(false);
            w.write_bits(delta >> self.trailing, 64 - self.leading - self.trailing);
            return;
        }
        self.leading = leading;
        self.trailing = trailing;
        w.write_bit(true);
        w.write_bits(u64::from(leading), 5);
        let sig = 64 - leading - trailing;
        // 64 significant bits do not fit in six bits; they are written as 0.
        w.write_bits(u64::from(sig), 6);
        w.write_bits(delta >> trailing, sig);
    }
}

/// Whether `x` fits the `nbits`-wide two's-complement range Prometheus uses
/// for delta-of-delta buckets: -(2^(n-1) - 1) ..= 2^(n-1).
fn fits(x: i64, nbits: u32) -> bool {
    -((1i64 << (nbits - 1)) - 1) <= x && x <= 1i64 << (nbits - 1)
}

/// Iterates the samples of one XOR chunk.
#[derive(Clone, Debug)]
pub struct XorIter<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    t: i64,
    v: f64,
    t_delta: i64,
    leading: u8,
    trailing: u8,
    corrupt: bool,
}

impl<'a> XorIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let (total, body) = match data {
            [hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]), rest),
            _ => (0, &[][..]),
        };
        Self {
            r: BitReader::new(body),
            total,
            read: 0,
            t: 0,
            v: 0.0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
            corrupt: data.len() < HEADER,
        }
    }

    /// Number of samples the header announces.
    pub fn len_announced(&self) -> u16 {
        self.total
    }

    /// True when decoding stopped early because the data was malformed.
    pub fn is_corrupt(&self) -> bool {
        self.corrupt
    }

    fn step(&mut self) -> Option<()> {
        match self.read {
            0 => {
                self.t = self.r.read_varint()?;
                self.v = f64::from_bits(self.r.read_bits(64)?);
            }
            1 => {
                self.t_delta = self.r.read_uvarint()? as i64;
                self.t = self.t.wrapping_add(self.t_delta);
                self.read_value()?;
            }
            _ => {
                let mut prefix = 0u8;
                for _ in 0..4 {
                    prefix <<= 1;
                    if !self.r.read_bit()? {
                        break;
                    }
                    prefix |= 1;
                }
                let nbits = match prefix {
                    0b0 => 0,
                    0b10 => 14,
                    0b110 => 17,
                    0b1110 => 20,
                    _ => 64,
                };
                let dod = if nbits == 0 {
                    0
                } else {
                    let raw = self.r.read_bits(nbits)?;
                    if nbits == 64 {
                        raw as i64
                    } else if raw > 1u64 << (nbits - 1) {
                        // Sign-extend from nbits.
                        raw as i64 - (1i64 << nbits)
                    } else {
                        raw as i64
                    }
                };
                self.t_delta = self.t_delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.t_delta);
                self.read_value()?;
            }
        }
        Some(())
    }

    fn read_value(&mut self) -> Option<()> {
        if !self.r.read_bit()? {
            return Some(());
        }
        if self.r.read_bit()? {
            self.leading = self.r.read_bits(5)? as u8;
            let mut sig = self.r.read_bits(6)? as u8;
            if sig == 0 {
                sig = 64;
            }
            self.trailing = 64u8.checked_sub(self.leading)?.checked_sub(sig)?;
        }
        let sig = 64 - self.leading - self.trailing;
        let bits = self.r.read_bits(sig)?;
        self.v = f64::from_bits(self.v.to_bits() ^ (bits << self.trailing));
        Some(())
    }
}

impl Iterator for XorIter<'_> {
    type Item = Sample;

    #[inline]
    fn next(&mut self) -> Option<Sample> {
        if self.read >= self.total || self.corrupt {
            return None;
        }
        if self.step().is_none() {
            self.corrupt = true;
            return None;
        }
        self.read += 1;
        Some(Sample::new(self.t, self.v))
    }
}

/// Decodes a whole chunk, failing if it is malformed.
pub fn decode_all(data: &[u8]) -> Result<Vec<Sample>, &'static str> {
    let mut it = XorIter::new(data);
    let mut out = Vec::with_capacity(it.len_announced() as usize);
    out.extend(&mut it);
    if it.is_corrupt() {
        return Err("malformed xor chunk");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn encode(samples: &[Sample]) -> Vec<u8> {
        let mut a = XorAppender::new();
        for s in samples {
            a.append(s.t, s.v);
        }
        a.finish()
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::from_bits(STALE_NAN_BITS)),
            Just(0.0),
            Just(-0.0),
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            (-1e6f64..1e6).prop_map(|v| (v * 100.0).round() / 100.0),
            (0u64..1_000_000).prop_map(|v| v as f64),
        ]
    }

    fn samples() -> impl Strategy<Value = Vec<Sample>> {
        (
            any::<i32>().prop_map(i64::from),
            proptest::collection::vec(
                (prop_oneof![Just(15_000i64), 1i64..100, 1i64..100_000_000, 1i64..(1i64 << 40)], value()),
                0..300,
            ),
        )
            .prop_map(|(start, steps)| {
                let mut t = start;
                steps
                    .into_iter()
                    .map(|(d, v)| {
                        t += d;
                        Sample::new(t, v)
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn round_trip_preserves_every_bit(input in samples()) {
            let bytes = encode(&input);
            let out = decode_all(&bytes).expect("decodes");
            prop_assert_eq!(out.len(), input.len());
            for (a, b) in input.iter().zip(&out) {
                prop_assert!(a.same_as(b), "{a:?} != {b:?}");
            }
        }

        #[test]
        fn every_prefix_decodes_while_appending(input in samples()) {
            let mut a = XorAppender::new();
            for (i, s) in input.iter().enumerate() {
                a.append(s.t, s.v);
                let out = decode_all(a.bytes()).expect("decodes");
                prop_assert_eq!(out.len(), i + 1);
                prop_assert!(out[i].same_as(s));
            }
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_all(&data);
        }
    }

    #[test]
    fn regular_scrapes_compress_well() {
        let input: Vec<Sample> =
            (0..120).map(|i| Sample::new(1_700_000_000_000 + i * 15_000, 100.0 + i as f64)).collect();
        let bytes = encode(&input);
        assert!(bytes.len() < 120 * 3, "{} bytes for 120 regular samples", bytes.len());
    }

    #[test]
    fn known_bytes_match_prometheus_layout() {
        // Header (2 samples), varint(1000)=0xd0 0x0f, f64 1.0, uvarint(15)=0x0f,
        // then one '0' bit for an unchanged value, padded.
        let bytes = encode(&[Sample::new(1000, 1.0), Sample::new(1015, 1.0)]);
        assert_eq!(bytes, vec![0x00, 0x02, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x0f, 0x00]);
    }
}
