//! Big-endian bit streams, most significant bit first.

/// Appends bits to a byte buffer.
#[derive(Clone, Debug, Default)]
pub(super) struct BitWriter {
    buf: Vec<u8>,
    /// Unused low bits in the last byte of `buf`.
    free: u8,
}

impl BitWriter {
    pub(super) fn with_capacity(bytes: usize) -> Self {
        Self { buf: Vec::with_capacity(bytes), free: 0 }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    #[inline]
    pub(super) fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.buf.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if bit && let Some(last) = self.buf.last_mut() {
            *last |= 1 << self.free;
        }
    }

    /// Writes the low `n` bits of `v` (n <= 64), most significant first.
    #[inline]
    pub(super) fn write_bits(&mut self, v: u64, mut n: u8) {
        debug_assert!(n <= 64);
        while n > 0 {
            if self.free == 0 {
                self.buf.push(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            let shift = n - take;
            let chunk = ((v >> shift) & ((1u64 << take) - 1)) as u8;
            self.free -= take;
            if let Some(last) = self.buf.last_mut() {
                *last |= chunk << self.free;
            }
            n -= take;
        }
    }

    pub(super) fn write_byte(&mut self, b: u8) {
        self.write_bits(u64::from(b), 8);
    }
}

/// Reads bits from a byte slice, most significant first, through a 64-bit
/// window refilled a byte at a time (decoding is the hot path of queries).
#[derive(Clone, Debug)]
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` to load into the window.
    idx: usize,
    /// Unread bits, left-aligned.
    window: u64,
    /// How many bits of `window` are valid.
    valid: u32,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, idx: 0, window: 0, valid: 0 }
    }

    #[inline]
    fn refill(&mut self) {
        if self.valid <= 56 && self.idx + 8 <= self.data.len() {
            // Fast path: load eight bytes at once and keep what fits.
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.data[self.idx..self.idx + 8]);
            let word = u64::from_be_bytes(b);
            let take = (64 - self.valid) / 8;
            self.window |= if take == 8 { word } else { (word >> (64 - 8 * take)) << (64 - self.valid - 8 * take) };
            self.valid += 8 * take;
            self.idx += take as usize;
            return;
        }
        while self.valid <= 56 && self.idx < self.data.len() {
            self.window |= u64::from(self.data[self.idx]) << (56 - self.valid);
            self.valid += 8;
            self.idx += 1;
        }
    }

    #[inline]
    pub(super) fn read_bit(&mut self) -> Option<bool> {
        if self.valid == 0 {
            self.refill();
            if self.valid == 0 {
                return None;
            }
        }
        let bit = self.window >> 63;
        self.window <<= 1;
        self.valid -= 1;
        Some(bit == 1)
    }

    /// Reads `n` bits (n <= 64) as the low bits of the result.
    #[inline(always)]
    pub(super) fn read_bits(&mut self, n: u8) -> Option<u64> {
        debug_assert!(n <= 64);
        let n = u32::from(n);
        if n == 0 {
            return Some(0);
        }
        if n > 56 {
            return self.read_wide(n);
        }
        self.read_upto_56(n)
    }

    /// More bits than one refill guarantees: read in two parts.
    #[inline(never)]
    fn read_wide(&mut self, n: u32) -> Option<u64> {
        let hi = self.read_upto_56(32)?;
        let lo = self.read_upto_56(n - 32)?;
        Some((hi << (n - 32)) | lo)
    }

    #[inline(always)]
    fn read_upto_56(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if self.valid < n {
            self.refill();
            if self.valid < n {
                return None;
            }
        }
        let v = self.window >> (64 - n);
        self.window <<= n;
        self.valid -= n;
        Some(v)
    }

    pub(super) fn read_byte(&mut self) -> Option<u8> {
        self.read_bits(8).map(|b| b as u8)
    }

    /// Reads an unsigned LEB128 varint from the bit stream.
    pub(super) fn read_uvarint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for i in 0..10 {
            let b = self.read_byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(out);
            }
        }
        None
    }

    /// Reads a zig-zag signed varint.
    pub(super) fn read_varint(&mut self) -> Option<i64> {
        let u = self.read_uvarint()?;
        Some(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
}

pub(super) fn write_uvarint(w: &mut BitWriter, mut v: u64) {
    while v >= 0x80 {
        w.write_byte((v as u8) | 0x80);
        v >>= 7;
    }
    w.write_byte(v as u8);
}

pub(super) fn write_varint(w: &mut BitWriter, v: i64) {
    write_uvarint(w, ((v << 1) ^ (v >> 63)) as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bits_round_trip(items in proptest::collection::vec((any::<u64>(), 1u8..=64), 0..50)) {
            let mut w = BitWriter::default();
            for (v, n) in &items {
                w.write_bits(*v, *n);
            }
            let bytes = w.into_bytes();
            let mut r = BitReader::new(&bytes);
            for (v, n) in &items {
                let mask = if *n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                prop_assert_eq!(r.read_bits(*n), Some(v & mask));
            }
        }

        #[test]
        fn varints_round_trip(a in any::<i64>(), b in any::<u64>()) {
            let mut w = BitWriter::default();
            w.write_bit(true);
            write_varint(&mut w, a);
            write_uvarint(&mut w, b);
            let bytes = w.into_bytes();
            let mut r = BitReader::new(&bytes);
            prop_assert_eq!(r.read_bit(), Some(true));
            prop_assert_eq!(r.read_varint(), Some(a));
            prop_assert_eq!(r.read_uvarint(), Some(b));
        }
    }
}
