//! Record framing shared by WAL segments and checkpoints:
//! `[body length: u32 LE][CRC-32C of body: u32 LE][body]`, where the body
//! starts with a one-byte record type.

/// Bytes of framing before each body.
pub const FRAME_HEADER: usize = 8;
/// Bodies larger than this are treated as corruption (a length field torn
/// into garbage must not make replay allocate gigabytes).
pub const MAX_BODY: usize = 256 << 20;

/// Appends one framed record.
pub fn put_record(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// What a reader found at its position.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    Record(&'a [u8]),
    /// Clean end of data.
    End,
    /// Bytes that do not form a whole, valid record start here.
    Corrupt {
        offset: usize,
        reason: &'static str,
    },
}

/// Reads framed records from a buffer.
#[derive(Debug)]
pub struct FrameReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> FrameReader<'a> {
    pub fn new(data: &'a [u8], start: usize) -> Self {
        Self { data, pos: start }
    }

    /// Offset just past the last good record.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn next_record(&mut self) -> Next<'a> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return Next::End;
        }
        if rest.len() < FRAME_HEADER {
            return Next::Corrupt { offset: self.pos, reason: "truncated record header" };
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 && crc == 0 && rest.iter().all(|b| *b == 0) {
            // Zero fill after a crash that extended the file but not its data.
            return Next::Corrupt { offset: self.pos, reason: "zero-filled tail" };
        }
        if len == 0 || len > MAX_BODY {
            return Next::Corrupt { offset: self.pos, reason: "implausible record length" };
        }
        if rest.len() < FRAME_HEADER + len {
            return Next::Corrupt { offset: self.pos, reason: "truncated record" };
        }
        let body = &rest[FRAME_HEADER..FRAME_HEADER + len];
        if crc32c::crc32c(body) != crc {
            return Next::Corrupt { offset: self.pos, reason: "checksum mismatch" };
        }
        self.pos += FRAME_HEADER + len;
        Next::Record(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_and_detects_damage() {
        let mut buf = Vec::new();
        put_record(&mut buf, b"\x01hello");
        put_record(&mut buf, b"\x02world!");
        let mut r = FrameReader::new(&buf, 0);
        assert_eq!(r.next_record(), Next::Record(b"\x01hello"));
        assert_eq!(r.next_record(), Next::Record(b"\x02world!"));
        assert_eq!(r.next_record(), Next::End);

        let torn = &buf[..buf.len() - 2];
        let mut r = FrameReader::new(torn, 0);
        assert!(matches!(r.next_record(), Next::Record(_)));
        assert!(matches!(r.next_record(), Next::Corrupt { offset: 14, .. }));

        let mut flipped = buf.clone();
        flipped[10] ^= 0x40;
        assert!(matches!(FrameReader::new(&flipped, 0).next_record(), Next::Corrupt { offset: 0, .. }));

        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0; 32]);
        let mut r = FrameReader::new(&zeros, 0);
        r.next_record();
        r.next_record();
        assert!(matches!(r.next_record(), Next::Corrupt { reason: "zero-filled tail", .. }));
    }
}
