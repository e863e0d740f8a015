//! Bounds the work the Parquet decoder spends on a block's Thrift
//! structures, which it trusts more than a hostile or corrupted file
//! deserves.
//!
//! The decoder skips fields it does not know, and its skipper reads no
//! bytes for a boolean list element (nor, on a stream, for a double or UUID
//! past the end of the input): one field declaring a list of two billion
//! booleans costs about 30 s of CPU, and nested lists multiply that. It
//! also reserves memory for a list from its declared count before reading
//! an element. No deadline can stop a thread spinning inside the decoder,
//! so Cairn checks the bytes before the decoder sees them, two ways:
//!
//! - The footer and page index are read by Cairn (`BlockReader::open`) and
//!   walked strictly against the Parquet schema ([`check_footer`],
//!   [`check_column_index`], [`check_offset_index`]): every field must be
//!   one the format defines, with its declared type, and every list must
//!   fit in the bytes left. Anything else is refused as corrupt. What
//!   passes leaves the decoder nothing to skip but well-typed fields.
//! - Page headers are checked in each range a read fetches
//!   ([`check_pages`]): each header is walked the way the decoder walks it,
//!   counting one step per value its skipper would visit, and a range whose
//!   headers would cost more steps than it has bytes (plus a small margin)
//!   is refused. Valid headers cost at most two steps per byte (a boolean
//!   field's value sits in its field header), so this walk refuses nothing
//!   a writer could produce and needs no assumption about where ranges
//!   start. It mirrors the decoder's reads field by field, including where
//!   the decoder ignores the declared type of a known field; where the
//!   decoder would fail (end of input, an invalid type, a missing field),
//!   the walk stops and lets the decoder report its own error. Where the
//!   read skips rows inside pages of a list column, each data page's
//!   repetition levels are counted too ([`check_repetition_levels`]).

/// Steps allowed beyond two per byte of the range.
const MARGIN: u64 = 4096;

/// Nesting the decoder's skipper allows before it fails.
const SKIP_DEPTH: i8 = 64;

/// Thrift compact types (field headers; list elements use the same codes,
/// with 1 and 2 both meaning a boolean).
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

/// Why a walk stopped early.
enum Halt {
    /// The decoder fails here on its own.
    Fails,
    /// The headers would cost more than the budget.
    Overspent,
}

type Walk<T> = Result<T, Halt>;

/// Checks the page headers in `buf`, a range fetched for a column chunk.
/// Headers start at offset 0 and at each of `starts` (page offsets from the
/// offset index, relative to `buf`); from each, the next header follows the
/// page's compressed size, as the decoder reads a chunk front to back.
///
/// With `repeated`, each data page's repetition levels are checked too
/// (see [`check_repetition_levels`]), but for the pages (offsets in `buf`)
/// `checked` says were checked before; returns the offsets of the pages
/// whose levels it checked.
pub(crate) fn check_pages(
    buf: &[u8],
    starts: impl IntoIterator<Item = usize>,
    repeated: Option<Repeated>,
    checked: &dyn Fn(usize) -> bool,
) -> Result<Vec<usize>, String> {
    let mut walker = Walker { buf, pos: 0, steps: 0, budget: 2 * buf.len() as u64 + MARGIN };
    let mut levels_checked = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for start in std::iter::once(0).chain(starts) {
        let mut at = start;
        while at < buf.len() && seen.insert(at) {
            walker.pos = at;
            match walker.page_header() {
                Ok(header) => {
                    let Some(size) = header.compressed.and_then(|s| usize::try_from(s).ok()) else { break };
                    let data = &buf[walker.pos.min(buf.len())..(walker.pos + size).min(buf.len())];
                    if let Some(r) = repeated
                        && !checked(at)
                    {
                        if let Err(found) = check_repetition_levels(&header, data, r) {
                            return Err(format!(
                                "the page at byte {at} of a {} byte range holds {found} repetition levels for {} values",
                                buf.len(),
                                header.values.max(header.values_v2)
                            ));
                        }
                        levels_checked.push(at);
                    }
                    at = walker.pos + size;
                }
                Err(Halt::Fails) => break,
                Err(Halt::Overspent) => {
                    return Err(format!(
                        "the page header at byte {at} of a {} byte range declares more values than it could hold",
                        buf.len()
                    ));
                }
            }
        }
    }
    Ok(levels_checked)
}

/// A cursor over one fetched range, with the step budget of the decoder's
/// skipper. Past the end of the range it behaves as the decoder's stream
/// reader does: reads of single bytes fail, skips of fixed widths do not.
struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    steps: u64,
    budget: u64,
}

impl Walker<'_> {
    fn byte(&mut self) -> Walk<u8> {
        let b = *self.buf.get(self.pos).ok_or(Halt::Fails)?;
        self.pos += 1;
        Ok(b)
    }

    /// Skips `n` bytes, stopping quietly at the end of the input.
    fn skip_bytes(&mut self, n: u64) {
        let left = (self.buf.len() - self.pos.min(self.buf.len())) as u64;
        self.pos += n.min(left) as usize;
    }

    /// An unsigned LEB128 varint, with the decoder's wrapping shifts.
    fn varint(&mut self) -> Walk<u64> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).wrapping_shl(shift);
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift = shift.wrapping_add(7);
        }
    }

    fn zigzag(&mut self) -> Walk<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn i32(&mut self) -> Walk<i32> {
        Ok(self.zigzag()? as i32)
    }

    fn step(&mut self) -> Walk<()> {
        self.steps += 1;
        if self.steps > self.budget { Err(Halt::Overspent) } else { Ok(()) }
    }

    /// A field header: `None` at the end of a struct, else its type and id.
    fn field(&mut self, last_id: i16) -> Walk<Option<(u8, i16)>> {
        let b = self.byte()?;
        let ty = b & 0x0f;
        if ty == 0 {
            return Ok(None);
        }
        if ty > UUID {
            return Err(Halt::Fails);
        }
        let delta = (b >> 4) as i16;
        let id = if delta != 0 { last_id.checked_add(delta).ok_or(Halt::Fails)? } else { self.zigzag()? as i16 };
        Ok(Some((ty, id)))
    }

    /// An element type code (1 and 2 both mean a boolean) as the field
    /// type the skipper then uses.
    fn element(code: u8) -> Walk<u8> {
        match code {
            1 | 2 => Ok(BOOL_TRUE),
            3..=13 => Ok(code),
            _ => Err(Halt::Fails),
        }
    }

    /// A list or set header: the element type and count.
    fn list_begin(&mut self) -> Walk<(u8, u32)> {
        let b = self.byte()?;
        if b == 0 {
            return Ok((BYTE, 0));
        }
        let element = Self::element(b & 0x0f)?;
        let count = match b >> 4 {
            15 => i32::try_from(self.varint()?).map_err(|_| Halt::Fails)? as u32,
            n => u32::from(n),
        };
        Ok((element, count))
    }

    /// Skips one value of type `ty` as the decoder's skipper does.
    fn skip(&mut self, ty: u8, depth: i8) -> Walk<()> {
        if depth == 0 {
            return Err(Halt::Fails);
        }
        self.step()?;
        match ty {
            BOOL_TRUE | BOOL_FALSE => {}
            BYTE => {
                self.byte()?;
            }
            I16 | I32 | I64 => {
                self.varint()?;
            }
            DOUBLE => self.skip_bytes(8),
            UUID => self.skip_bytes(16),
            BINARY => {
                let len = self.varint()?;
                self.skip_bytes(len);
            }
            STRUCT => {
                while let Some((field_ty, _)) = self.field(0)? {
                    self.skip(field_ty, depth - 1)?;
                }
            }
            LIST | SET => {
                let (element, count) = self.list_begin()?;
                for _ in 0..count {
                    self.skip(element, depth - 1)?;
                }
            }
            MAP => {
                let count = i32::try_from(self.varint()?).map_err(|_| Halt::Fails)?;
                if count > 0 {
                    let kv = self.byte()?;
                    let (key, value) = (Self::element(kv >> 4)?, Self::element(kv & 0x0f)?);
                    for _ in 0..count {
                        self.skip(key, depth - 1)?;
                        self.skip(value, depth - 1)?;
                    }
                }
            }
            _ => return Err(Halt::Fails),
        }
        Ok(())
    }

    /// Walks a struct whose known fields are read by `known` (given the
    /// field's declared type and id; it returns false for an unknown id,
    /// which is then skipped by its declared type).
    fn fields(&mut self, mut known: impl FnMut(&mut Self, u8, i16) -> Walk<bool>) -> Walk<()> {
        let mut last = 0i16;
        while let Some((ty, id)) = self.field(last)? {
            if !known(self, ty, id)? {
                self.skip(ty, SKIP_DEPTH)?;
            }
            last = id;
        }
        Ok(())
    }

    /// A boolean field, whose value is its declared type.
    fn bool_field(ty: u8) -> Walk<bool> {
        if ty == BOOL_TRUE || ty == BOOL_FALSE { Ok(true) } else { Err(Halt::Fails) }
    }

    /// A page header read without its statistics, leaving the cursor on
    /// the page's first byte.
    fn page_header(&mut self) -> Walk<Header> {
        let mut h = Header::default();
        self.fields(|w, _ty, id| {
            match id {
                1 => h.kind = w.i32()?,
                // uncompressed size, crc
                2 | 4 => {
                    w.i32()?;
                }
                3 => h.compressed = Some(w.i32()?),
                // data page: num_values and three encodings; statistics skipped
                5 => w.fields(|w, _, id| match id {
                    1 => w.i32().map(|n| h.values = n).map(|_| true),
                    2 | 3 => w.i32().map(|_| true),
                    4 => w.i32().map(|e| h.repetition_encoding = e).map(|_| true),
                    _ => Ok(false),
                })?,
                // index page: no fields
                6 => w.fields(|_, _, _| Ok(false))?,
                // dictionary page: num_values, encoding, is_sorted
                7 => w.fields(|w, ty, id| match id {
                    1 | 2 => w.i32().map(|_| true),
                    3 => Self::bool_field(ty),
                    _ => Ok(false),
                })?,
                // data page v2: six integers, is_compressed; statistics skipped
                8 => w.fields(|w, ty, id| match id {
                    1 => w.i32().map(|n| h.values_v2 = n).map(|_| true),
                    2..=5 => w.i32().map(|_| true),
                    6 => w.i32().map(|n| h.repetition_bytes_v2 = n).map(|_| true),
                    7 => Self::bool_field(ty),
                    _ => Ok(false),
                })?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(h)
    }
}

/// What a page header says of its page (what the repetition level check
/// needs).
#[derive(Default)]
struct Header {
    /// The page type: 0 a data page, 2 a dictionary, 3 a data page v2.
    kind: i32,
    /// Bytes of the page after the header (`None` when the header lacks
    /// the field).
    compressed: Option<i32>,
    /// Values (levels) of a data page, and how its repetition levels are
    /// encoded.
    values: i32,
    repetition_encoding: i32,
    /// Values of a data page v2, and the bytes of its repetition levels.
    values_v2: i32,
    repetition_bytes_v2: i32,
}

const DATA_PAGE: i32 = 0;
const DATA_PAGE_V2: i32 = 3;
/// The level encoding the decoder reads run by run (`RLE`); the other
/// (`BIT_PACKED`) has its length fixed by the value count.
const RLE: i32 = 3;

/// How the pages of a column with repetition levels are stored: the bit
/// width of its levels, and whether pages are zstd-compressed (else not
/// compressed; the decoder refuses any other codec Cairn could meet).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Repeated {
    pub bit_width: u8,
    pub zstd: bool,
}

/// Checks that a data page of a repeated column holds as many repetition
/// levels as it declares values. The decoder, skipping rows inside a page
/// whose levels run out early, loops forever without reading anything
/// (parquet 59.3; reading them instead fails cleanly). `data` is the page
/// after its header, as far as the range holds it. `Ok` also when the
/// decoder would fail on the page by itself.
fn check_repetition_levels(h: &Header, data: &[u8], r: Repeated) -> Result<(), u64> {
    let (values, stream): (i32, Box<dyn std::io::Read + '_>) = match h.kind {
        DATA_PAGE if h.repetition_encoding == RLE => {
            // A page v1: the levels first, each run after a four-byte length,
            // all of it compressed.
            let mut page: Box<dyn std::io::Read> = if r.zstd {
                match zstd::stream::read::Decoder::with_buffer(data) {
                    Ok(d) => Box::new(d),
                    Err(_) => return Ok(()),
                }
            } else {
                Box::new(data)
            };
            let mut len = [0u8; 4];
            if page.read_exact(&mut len).is_err() {
                return Ok(());
            }
            (h.values, Box::new(std::io::Read::take(page, u64::from(u32::from_le_bytes(len)))))
        }
        DATA_PAGE_V2 => {
            // A page v2: the levels first, never compressed, their length
            // in the header.
            let Ok(len) = usize::try_from(h.repetition_bytes_v2) else { return Ok(()) };
            let Some(levels) = data.get(..len) else { return Ok(()) };
            (h.values_v2, Box::new(levels))
        }
        _ => return Ok(()),
    };
    let Ok(values) = u64::try_from(values) else { return Ok(()) };
    match run_levels(stream, r.bit_width, values) {
        Some(n) if n < values => Err(n),
        _ => Ok(()),
    }
}

/// Levels the decoder's run-length decoder yields from `stream` (runs of
/// one repeated value, or bit-packed groups of eight; a truncated last
/// group yields what it holds), counting at most `enough`. `None` when the
/// decoder would fail on the stream.
fn run_levels(stream: impl std::io::Read, bit_width: u8, enough: u64) -> Option<u64> {
    use std::io::Read;
    let mut bytes = std::io::BufReader::new(stream).bytes();
    let bit_width = u64::from(bit_width.max(1));
    let mut total = 0u64;
    while total < enough {
        // The run's indicator: a varint of at most ten bytes.
        let mut indicator = 0i64;
        let mut ended = true;
        for shift in (0..70).step_by(7) {
            let Some(Ok(b)) = bytes.next() else { return Some(total) };
            indicator |= i64::from(b & 0x7f).wrapping_shl(shift);
            if b & 0x80 == 0 {
                ended = false;
                break;
            }
        }
        if ended || indicator == 0 {
            return Some(total);
        }
        if indicator & 1 == 1 {
            let count = u64::from((indicator >> 1).wrapping_mul(8) as u32);
            let want = (count * bit_width).div_ceil(8);
            let got = bytes.by_ref().take(want as usize).count() as u64;
            let read = count.min(got * 8 / bit_width);
            total += read;
            if read < count {
                return Some(total);
            }
        } else {
            let count = u64::from((indicator >> 1) as u32);
            let width = bit_width.div_ceil(8) as usize;
            if bytes.by_ref().take(width).count() < width {
                return None;
            }
            total += count;
        }
    }
    Some(total)
}

/// What the strict walk expects of a value.
#[derive(Clone, Copy)]
enum Shape {
    Bool,
    Byte,
    I16,
    I32,
    I64,
    Double,
    Binary,
    List(&'static Shape),
    Struct(&'static [Field]),
}

/// A field of a struct: its id, its shape, and whether its value locates
/// a page index structure.
#[derive(Clone, Copy)]
struct Field(i16, Shape, Note);

#[derive(Clone, Copy, PartialEq)]
enum Note {
    None,
    OffsetIndexOffset,
    OffsetIndexLength,
    ColumnIndexOffset,
    ColumnIndexLength,
}

impl Shape {
    /// Whether a declared compact type code is this shape's.
    fn declared_as(self, code: u8) -> bool {
        match self {
            Shape::Bool => code == BOOL_TRUE || code == BOOL_FALSE,
            Shape::Byte => code == BYTE,
            Shape::I16 => code == I16,
            Shape::I32 => code == I32,
            Shape::I64 => code == I64,
            Shape::Double => code == DOUBLE,
            Shape::Binary => code == BINARY,
            Shape::List(_) => code == LIST,
            Shape::Struct(_) => code == STRUCT,
        }
    }
}

const fn f(id: i16, shape: Shape) -> Field {
    Field(id, shape, Note::None)
}

// The structures of the Parquet format (parquet.thrift) the decoder reads
// from a footer and a page index.
use Shape::{Binary as Bin, Bool, Byte, Double as F64, I16 as Short, I32 as Int, I64 as Long, List, Struct};
const EMPTY: &[Field] = &[];
const TIME_UNIT: &[Field] = &[f(1, Struct(EMPTY)), f(2, Struct(EMPTY)), f(3, Struct(EMPTY))];
const TIMESTAMP: &[Field] = &[f(1, Bool), f(2, Struct(TIME_UNIT))];
const LOGICAL_TYPE: &[Field] = &[
    f(1, Struct(EMPTY)),
    f(2, Struct(EMPTY)),
    f(3, Struct(EMPTY)),
    f(4, Struct(EMPTY)),
    f(5, Struct(&[f(1, Int), f(2, Int)])),
    f(6, Struct(EMPTY)),
    f(7, Struct(TIMESTAMP)),
    f(8, Struct(TIMESTAMP)),
    f(10, Struct(&[f(1, Byte), f(2, Bool)])),
    f(11, Struct(EMPTY)),
    f(12, Struct(EMPTY)),
    f(13, Struct(EMPTY)),
    f(14, Struct(EMPTY)),
    f(15, Struct(EMPTY)),
    f(16, Struct(&[f(1, Byte)])),
    f(17, Struct(&[f(1, Bin)])),
    f(18, Struct(&[f(1, Bin), f(2, Int)])),
];
const SCHEMA_ELEMENT: &[Field] = &[
    f(1, Int),
    f(2, Int),
    f(3, Int),
    f(4, Bin),
    f(5, Int),
    f(6, Int),
    f(7, Int),
    f(8, Int),
    f(9, Int),
    f(10, Struct(LOGICAL_TYPE)),
];
const STATISTICS: &[Field] =
    &[f(1, Bin), f(2, Bin), f(3, Long), f(4, Long), f(5, Bin), f(6, Bin), f(7, Bool), f(8, Bool)];
const KEY_VALUE: &[Field] = &[f(1, Bin), f(2, Bin)];
const BOUNDING_BOX: &[Field] =
    &[f(1, F64), f(2, F64), f(3, F64), f(4, F64), f(5, F64), f(6, F64), f(7, F64), f(8, F64)];
const COLUMN_META_DATA: &[Field] = &[
    f(1, Int),
    f(2, List(&Int)),
    f(3, List(&Bin)),
    f(4, Int),
    f(5, Long),
    f(6, Long),
    f(7, Long),
    f(8, List(&Struct(KEY_VALUE))),
    f(9, Long),
    f(10, Long),
    f(11, Long),
    f(12, Struct(STATISTICS)),
    f(13, List(&Struct(&[f(1, Int), f(2, Int), f(3, Int)]))),
    f(14, Long),
    f(15, Int),
    f(16, Struct(&[f(1, Long), f(2, List(&Long)), f(3, List(&Long))])),
    f(17, Struct(&[f(1, Struct(BOUNDING_BOX)), f(2, List(&Int))])),
];
const COLUMN_CHUNK: &[Field] = &[
    f(1, Bin),
    f(2, Long),
    f(3, Struct(COLUMN_META_DATA)),
    Field(4, Long, Note::OffsetIndexOffset),
    Field(5, Int, Note::OffsetIndexLength),
    Field(6, Long, Note::ColumnIndexOffset),
    Field(7, Int, Note::ColumnIndexLength),
];
const ROW_GROUP: &[Field] = &[
    f(1, List(&Struct(COLUMN_CHUNK))),
    f(2, Long),
    f(3, Long),
    f(4, List(&Struct(&[f(1, Int), f(2, Bool), f(3, Bool)]))),
    f(5, Long),
    f(6, Long),
    f(7, Short),
];
const FILE_META_DATA: &[Field] = &[
    f(1, Int),
    f(2, List(&Struct(SCHEMA_ELEMENT))),
    f(3, Long),
    f(4, List(&Struct(ROW_GROUP))),
    f(5, List(&Struct(KEY_VALUE))),
    f(6, Bin),
    f(7, List(&Struct(&[f(1, Struct(EMPTY))]))),
];
const COLUMN_INDEX: &[Field] = &[
    f(1, List(&Bool)),
    f(2, List(&Bin)),
    f(3, List(&Bin)),
    f(4, Int),
    f(5, List(&Long)),
    f(6, List(&Long)),
    f(7, List(&Long)),
];
const OFFSET_INDEX: &[Field] = &[f(1, List(&Struct(&[f(1, Long), f(2, Int), f(3, Long)]))), f(2, List(&Long))];

/// Where a footer says a column chunk's page index structures are.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct IndexLocation {
    pub offset_index: Option<(i64, i32)>,
    pub column_index: Option<(i64, i32)>,
}

/// Walks `footer` (the Thrift `FileMetaData`, without length and magic)
/// strictly; returns the page index locations of its column chunks.
pub(crate) fn check_footer(footer: &[u8]) -> Result<Vec<IndexLocation>, String> {
    let mut w = Strict { buf: footer, pos: 0, found: Vec::new() };
    w.whole(FILE_META_DATA, "footer")?;
    Ok(w.found)
}

/// Walks one column index strictly.
pub(crate) fn check_column_index(bytes: &[u8]) -> Result<(), String> {
    Strict { buf: bytes, pos: 0, found: Vec::new() }.whole(COLUMN_INDEX, "column index")
}

/// Walks one offset index strictly.
pub(crate) fn check_offset_index(bytes: &[u8]) -> Result<(), String> {
    Strict { buf: bytes, pos: 0, found: Vec::new() }.whole(OFFSET_INDEX, "offset index")
}

/// The strict walk over a slice: every field known and of its declared
/// type, every list within the bytes left.
struct Strict<'a> {
    buf: &'a [u8],
    pos: usize,
    found: Vec<IndexLocation>,
}

impl Strict<'_> {
    fn whole(&mut self, fields: &'static [Field], what: &str) -> Result<(), String> {
        self.fields(fields).map_err(|e| format!("{what}: {e} at byte {}", self.pos))
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("unexpected end")?;
        self.pos += 1;
        Ok(b)
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than ten bytes".into())
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn fields(&mut self, fields: &'static [Field]) -> Result<(), String> {
        let mut last = 0i16;
        let mut location = IndexLocation::default();
        let mut noted = false;
        loop {
            let b = self.byte()?;
            let code = b & 0x0f;
            if code == 0 {
                break;
            }
            let id = match b >> 4 {
                0 => i16::try_from(self.zigzag()?).map_err(|_| "a field id out of range")?,
                delta => last.checked_add(i16::from(delta)).ok_or("a field id out of range")?,
            };
            let Some(&Field(_, shape, note)) = fields.iter().find(|f| f.0 == id) else {
                return Err(format!("an unknown field {id}"));
            };
            if !shape.declared_as(code) {
                return Err(format!("field {id} declared with type {code}"));
            }
            if !matches!(shape, Shape::Bool) {
                let value = self.value(shape)?;
                if note != Note::None {
                    noted = true;
                    let v = value.ok_or("a page index location that is not an integer")?;
                    match note {
                        Note::OffsetIndexOffset => location.offset_index.get_or_insert((0, 0)).0 = v,
                        Note::OffsetIndexLength => location.offset_index.get_or_insert((0, 0)).1 = v as i32,
                        Note::ColumnIndexOffset => location.column_index.get_or_insert((0, 0)).0 = v,
                        Note::ColumnIndexLength => location.column_index.get_or_insert((0, 0)).1 = v as i32,
                        Note::None => {}
                    }
                }
            }
            last = id;
        }
        if noted {
            self.found.push(location);
        }
        Ok(())
    }

    /// Walks one value; returns it when it is an integer.
    fn value(&mut self, shape: Shape) -> Result<Option<i64>, String> {
        match shape {
            Shape::Bool => match self.byte()? {
                0..=2 => {}
                b => return Err(format!("a boolean {b}")),
            },
            Shape::Byte => {
                self.byte()?;
            }
            Shape::I16 | Shape::I32 | Shape::I64 => return self.zigzag().map(Some),
            Shape::Double => {
                if self.left() < 8 {
                    return Err("unexpected end".into());
                }
                self.pos += 8;
            }
            Shape::Binary => {
                let len = self.varint()?;
                if len > self.left() as u64 {
                    return Err(format!("a {len} byte string with {} bytes left", self.left()));
                }
                self.pos += len as usize;
            }
            Shape::List(element) => {
                let b = self.byte()?;
                if b != 0 {
                    if !element.declared_as(b & 0x0f) {
                        return Err(format!("a list of type {}", b & 0x0f));
                    }
                    let count = match b >> 4 {
                        15 => self.varint()?,
                        n => u64::from(n),
                    };
                    if count > self.left() as u64 {
                        return Err(format!("a list of {count} values with {} bytes left", self.left()));
                    }
                    for _ in 0..count {
                        self.value(*element)?;
                    }
                }
            }
            Shape::Struct(fields) => self.fields(fields)?,
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data page header (type 0, 10 bytes) whose field 9, unknown to the
    /// decoder, holds `unknown`; then the stop byte and a 10-byte page.
    fn header_with(unknown: &[u8]) -> Vec<u8> {
        let mut h = vec![0x15, 0x00, 0x15, 0x14, 0x15, 0x14];
        h.extend_from_slice(unknown);
        h.push(0x00);
        h.extend_from_slice(&[0u8; 10]);
        h
    }

    const HUGE_COUNT: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 0x07];

    #[test]
    fn plain_headers_pass_and_chain() {
        let mut two = header_with(&[]);
        two.extend(header_with(&[0x68, 0x03, b'a', b'b', b'c']));
        assert_eq!(check_pages(&two, [], None, &|_| false), Ok(vec![]));
    }

    #[test]
    fn a_huge_list_of_booleans_is_refused() {
        for element in [0xf1, 0xf2] {
            let mut field = vec![0x69, element];
            field.extend(HUGE_COUNT);
            let err = check_pages(&header_with(&field), [], None, &|_| false).expect_err("refused");
            assert!(err.contains("declares more values"), "{err}");
        }
    }

    #[test]
    fn a_huge_list_of_doubles_past_the_end_is_refused() {
        // The stream reader skips a double past the end without failing.
        let mut field = vec![0x69, 0xf7];
        field.extend(HUGE_COUNT);
        assert!(check_pages(&field_only(&field), [], None, &|_| false).is_err());
    }

    /// Just the fixed fields and `unknown`, with nothing after it.
    fn field_only(unknown: &[u8]) -> Vec<u8> {
        let mut h = vec![0x15, 0x00, 0x15, 0x14, 0x15, 0x14];
        h.extend_from_slice(unknown);
        h
    }

    #[test]
    fn many_small_boolean_lists_add_up() {
        // A list of 14-element boolean lists: each inner list costs one
        // byte and fourteen steps.
        let mut field = vec![0x69, 0xf9];
        let n = 10_000u32;
        let mut v = n;
        while v >= 0x80 {
            field.push((v as u8) | 0x80);
            v >>= 7;
        }
        field.push(v as u8);
        field.extend(std::iter::repeat_n(0xe1, n as usize));
        assert!(check_pages(&header_with(&field), [], None, &|_| false).is_err());
        // The same shape, small enough to be plausible, passes.
        let small = [0x69, 0x39, 0xe1, 0xe1, 0xe1];
        assert_eq!(check_pages(&header_with(&small), [], None, &|_| false), Ok(vec![]));
    }

    #[test]
    fn a_map_of_booleans_to_booleans_is_refused() {
        let mut field = vec![0x6b];
        field.extend(HUGE_COUNT);
        field.push(0x11);
        assert!(check_pages(&header_with(&field), [], None, &|_| false).is_err());
    }

    #[test]
    fn headers_at_offset_index_starts_are_checked() {
        // The chain from offset 0 jumps over the bad header; the offset
        // index points at it.
        let good = header_with(&[]);
        let mut bad_field = vec![0x69, 0xf1];
        bad_field.extend(HUGE_COUNT);
        let mut buf = good.clone();
        buf.extend(vec![0u8; 3]);
        let at = buf.len();
        buf.extend(header_with(&bad_field));
        assert_eq!(check_pages(&buf, [], None, &|_| false), Ok(vec![]));
        assert!(check_pages(&buf, [at], None, &|_| false).is_err());
    }

    #[test]
    fn depth_and_malformed_input_leave_the_decision_to_the_decoder() {
        // Past the skipper's depth the decoder fails by itself: no refusal.
        let mut deep = vec![0x69];
        deep.extend(std::iter::repeat_n(0x19, 100));
        assert_eq!(check_pages(&header_with(&deep), [], None, &|_| false), Ok(vec![]));
        // Truncated and invalid bytes.
        assert_eq!(check_pages(&[0x15], [], None, &|_| false), Ok(vec![]));
        assert_eq!(check_pages(&[0x0e, 0xff], [], None, &|_| false), Ok(vec![]));
        assert_eq!(check_pages(&[], [], None, &|_| false), Ok(vec![]));
    }

    /// A column index of two pages: null_pages, min and max values,
    /// boundary order; `extra` goes before the stop byte.
    fn column_index(null_page: u8, extra: &[u8]) -> Vec<u8> {
        let mut b = vec![0x19, 0x21, null_page, 0x00];
        b.extend([0x19, 0x28, 0x01, b'a', 0x01, b'b']);
        b.extend([0x19, 0x28, 0x01, b'c', 0x01, b'd']);
        b.extend([0x15, 0x00]);
        b.extend_from_slice(extra);
        b.push(0x00);
        b
    }

    #[test]
    fn the_strict_walk_takes_the_format_and_nothing_else() {
        assert_eq!(check_column_index(&column_index(0x01, &[])), Ok(()));
        // null_counts, a list of i64.
        assert_eq!(check_column_index(&column_index(0x01, &[0x19, 0x26, 0x00, 0x02])), Ok(()));
        for (bad, want) in [
            (column_index(0x07, &[]), "a boolean 7"),
            (column_index(0x01, &[0x59, 0xf1, 0xff, 0xff, 0xff, 0xff, 0x07]), "an unknown field 9"),
            (column_index(0x01, &[0x19, 0xf6, 0xff, 0xff, 0x03]), "a list of 65535 values"),
            (column_index(0x01, &[0x16, 0x00]), "field 5 declared with type 6"),
            (column_index(0x01, &[0x19, 0x26, 0x00]), "unexpected end"),
        ] {
            let err = check_column_index(&bad).expect_err("refused");
            assert!(err.contains(want), "{err}");
        }
        // An offset index: one page location, then a field the format
        // does not define.
        let mut offsets = vec![0x19, 0x1c, 0x16, 0x08, 0x15, 0x20, 0x16, 0x00, 0x00];
        assert_eq!(check_offset_index(&[offsets.clone(), vec![0x00]].concat()), Ok(()));
        offsets.extend([0x25, 0x02, 0x00]);
        assert!(check_offset_index(&offsets).expect_err("refused").contains("an unknown field 3"));
    }

    #[test]
    fn run_levels_count_as_the_decoder_yields_them() {
        // A run of five ones; a bit-packed group of eight.
        assert_eq!(run_levels(&[0x0a, 0x01][..], 1, u64::MAX), Some(5));
        assert_eq!(run_levels(&[0x03, 0xff][..], 1, u64::MAX), Some(8));
        // Two groups with one byte left: the decoder yields the first.
        assert_eq!(run_levels(&[0x05, 0xff][..], 1, u64::MAX), Some(8));
        // Runs one after another; a zero indicator ends the stream (padding).
        assert_eq!(run_levels(&[0x0a, 0x01, 0x03, 0x00, 0x00, 0x0a, 0x01][..], 1, u64::MAX), Some(13));
        // A run without its value: the decoder fails by itself.
        assert_eq!(run_levels(&[0x0a][..], 1, u64::MAX), None);
        // Counting stops once there are enough.
        assert_eq!(run_levels(&[0xfe, 0xff, 0xff, 0xff, 0x0f, 0x01][..], 1, 10), Some(2_147_483_647));
    }

    /// A data page (v1, levels run-length encoded) of `values` values whose
    /// repetition levels are `levels` (length-prefixed), zstd-compressed
    /// when asked.
    fn page_v1(values: i32, levels: &[u8], zstd: bool) -> (Header, Vec<u8>) {
        let mut data = (levels.len() as u32).to_le_bytes().to_vec();
        data.extend_from_slice(levels);
        data.extend_from_slice(&[0u8; 16]);
        let data = if zstd { zstd::bulk::compress(&data, 3).expect("compress") } else { data };
        let h = Header { kind: DATA_PAGE, values, repetition_encoding: RLE, ..Default::default() };
        (h, data)
    }

    #[test]
    fn pages_with_fewer_repetition_levels_than_values_are_refused() {
        let r = |zstd| Repeated { bit_width: 1, zstd };
        for zstd in [false, true] {
            // Five levels: enough for five values, not for six.
            let (h, data) = page_v1(5, &[0x0a, 0x01], zstd);
            assert_eq!(check_repetition_levels(&h, &data, r(zstd)), Ok(()));
            let (h, data) = page_v1(6, &[0x0a, 0x01], zstd);
            assert_eq!(check_repetition_levels(&h, &data, r(zstd)), Err(5));
        }
        // A page v2: levels uncompressed, their length in the header.
        let h = Header { kind: DATA_PAGE_V2, values_v2: 9, repetition_bytes_v2: 2, ..Default::default() };
        assert_eq!(check_repetition_levels(&h, &[0x0a, 0x01, 0xff], r(false)), Err(5));
        // Bit-packed levels (the other encoding) and dictionary pages are
        // not the decoder's problem.
        let h = Header { kind: DATA_PAGE, values: 100, repetition_encoding: 4, ..Default::default() };
        assert_eq!(check_repetition_levels(&h, &[], r(false)), Ok(()));
        let h = Header { kind: 2, values: 100, ..Default::default() };
        assert_eq!(check_repetition_levels(&h, &[], r(false)), Ok(()));
    }
}
