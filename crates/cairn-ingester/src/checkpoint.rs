//! Checkpoints: the whole head of a tenant written to one file, so that
//! replay reads one file plus the segments after it instead of the whole
//! history.
//!
//! Taking one: the WAL is cut at segment N while no append is in flight, so
//! every write in segments before N is already in the head. The head is then
//! written out series by series while appends continue into segment N and
//! later; replaying those over the checkpoint is idempotent (samples already
//! present are recognised as duplicates). The file is written under a
//! temporary name, fsynced and renamed to `checkpoint.N`; only then are
//! segments before N and older checkpoints deleted.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cairn_common::Sample;
use cairn_common::chunk::{XorAppender, XorIter};
use cairn_common::push::MetricMetadata;

use crate::head::Head;
use crate::head::packed::PackedLabels;
use crate::head::series::{ClosedChunk, HeadChunk, SeriesData};
use crate::wal::frame::{FrameReader, Next, put_record};
use crate::wal::record::{self, CHECKPOINT_END, Dec, DecodeError, Enc, SERIES_STATE};
use crate::wal::sync_dir;

/// First bytes of a checkpoint file: format name and version.
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"CAIRNC01";

pub fn path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("checkpoint.{n:08}"))
}

/// Checkpoints in `dir`, ascending by the segment they precede.
pub fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        if let Some(n) = name.to_str().and_then(|s| s.strip_prefix("checkpoint.")).and_then(|s| s.parse().ok()) {
            out.push(n);
        } else if name.to_str().is_some_and(|s| s.starts_with("checkpoint.") && s.ends_with(".tmp")) {
            // Left by a crash while writing; never complete.
            let _ = fs::remove_file(entry_path(dir, &name));
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn entry_path(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    dir.join(name)
}

/// What a checkpoint held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStats {
    pub series: u64,
    pub bytes: u64,
}

/// Writes the head and metadata as `checkpoint.n` in `dir`.
#[allow(clippy::disallowed_methods, reason = "fsyncs; callers run it on the blocking pool")]
pub fn write(dir: &Path, n: u32, head: &Head, metadata: &[MetricMetadata]) -> io::Result<CheckpointStats> {
    let final_path = path(dir, n);
    let tmp = dir.join(format!("checkpoint.{n:08}.tmp"));
    let file = fs::File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(CHECKPOINT_MAGIC)?;
    let mut stats = CheckpointStats { series: 0, bytes: CHECKPOINT_MAGIC.len() as u64 };
    let mut body = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4096);
    let mut emit = |w: &mut BufWriter<fs::File>, body: &[u8], stats: &mut CheckpointStats| -> io::Result<()> {
        framed.clear();
        put_record(&mut framed, body);
        stats.bytes += framed.len() as u64;
        w.write_all(&framed)
    };
    for s in head.all_series() {
        body.clear();
        {
            let data = s.data.lock();
            encode_state(&mut body, s.series_ref, &s.labels, &data);
        }
        emit(&mut w, &body, &mut stats)?;
        stats.series += 1;
    }
    if !metadata.is_empty() {
        body.clear();
        record::encode_metadata(&mut body, metadata);
        emit(&mut w, &body, &mut stats)?;
    }
    body.clear();
    let mut e = Enc(&mut body);
    e.u8(CHECKPOINT_END);
    e.uvarint(stats.series);
    emit(&mut w, &body, &mut stats)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(&tmp, &final_path)?;
    sync_dir(dir)?;
    Ok(stats)
}

fn encode_state(out: &mut Vec<u8>, r: u32, labels: &PackedLabels, data: &SeriesData) {
    let mut e = Enc(out);
    e.u8(SERIES_STATE);
    e.uvarint(u64::from(r));
    e.bytes(labels.as_bytes());
    e.uvarint(data.closed.len() as u64);
    for c in &data.closed {
        e.varint(c.min_t);
        e.varint(c.max_t);
        e.bytes(&c.data);
    }
    match &data.head {
        Some(h) => {
            e.u8(1);
            e.varint(h.min_t);
            e.bytes(h.app.bytes());
        }
        None => e.u8(0),
    }
    let ooo: &[Sample] = data.ooo.as_deref().map(Vec::as_slice).unwrap_or(&[]);
    e.uvarint(ooo.len() as u64);
    for s in ooo {
        e.varint(s.t);
        e.f64(s.v);
    }
}

/// One series restored from a checkpoint.
pub struct RestoredSeries {
    pub series_ref: u32,
    pub labels: PackedLabels,
    pub data: SeriesData,
    pub samples: u64,
}

fn decode_state(body: &[u8]) -> Result<RestoredSeries, DecodeError> {
    let bad = || DecodeError("series state");
    let mut d = Dec::new(&body[1..], "series state");
    let series_ref = d.u32()?;
    let labels = PackedLabels::from_bytes(d.bytes()?).ok_or_else(bad)?;
    let mut data = SeriesData::default();
    let mut samples = 0u64;
    let n = d.uvarint()?;
    for _ in 0..n {
        let min_t = d.varint()?;
        let max_t = d.varint()?;
        let bytes = d.bytes()?;
        samples += u64::from(XorIter::new(bytes).len_announced());
        data.closed.push(ClosedChunk { min_t, max_t, data: Bytes::copy_from_slice(bytes) });
    }
    if d.u8()? == 1 {
        let min_t = d.varint()?;
        let bytes = d.bytes()?;
        // The appender's state is not stored; re-encode the (short) chunk.
        let mut app = XorAppender::new();
        let mut it = XorIter::new(bytes);
        for s in &mut it {
            app.append(s.t, s.v);
        }
        if it.is_corrupt() {
            return Err(bad());
        }
        samples += u64::from(app.num_samples());
        if app.num_samples() > 0 {
            data.head = Some(HeadChunk { min_t, app });
        }
    }
    let n_ooo = d.uvarint()?;
    if n_ooo > 0 {
        let mut ooo = Vec::with_capacity(n_ooo.min(1 << 20) as usize);
        for _ in 0..n_ooo {
            let t = d.varint()?;
            let v = d.f64()?;
            ooo.push(Sample::new(t, v));
        }
        samples += n_ooo;
        data.ooo = Some(Box::new(ooo));
    }
    Ok(RestoredSeries { series_ref, labels, data, samples })
}

/// A record of a checkpoint being loaded.
pub enum Restored {
    Series(RestoredSeries),
    Metadata(Vec<MetricMetadata>),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading checkpoint: {0}")]
    Io(#[from] io::Error),
    #[error("checkpoint is damaged: {0}")]
    Damaged(String),
}

/// Reads a checkpoint, checking all of it before handing out anything, so
/// that a damaged file never half-populates a head.
pub fn load(file: &Path, apply: impl FnMut(Restored)) -> Result<CheckpointStats, LoadError> {
    decode(&fs::read(file)?, apply)
}

/// Decodes a checkpoint's bytes (see [`load`]).
pub fn decode(data: &[u8], mut apply: impl FnMut(Restored)) -> Result<CheckpointStats, LoadError> {
    if data.len() < CHECKPOINT_MAGIC.len() || &data[..CHECKPOINT_MAGIC.len()] != CHECKPOINT_MAGIC {
        return Err(LoadError::Damaged("bad header".into()));
    }
    let mut bodies = Vec::new();
    let mut r = FrameReader::new(data, CHECKPOINT_MAGIC.len());
    let mut complete = false;
    loop {
        match r.next_record() {
            Next::Record(body) if body[0] == CHECKPOINT_END => {
                complete = true;
                break;
            }
            Next::Record(body) => bodies.push(body),
            Next::End => break,
            Next::Corrupt { offset, reason } => {
                return Err(LoadError::Damaged(format!("{reason} at offset {offset}")));
            }
        }
    }
    if !complete {
        return Err(LoadError::Damaged("no end record".into()));
    }
    let mut decoded = Vec::with_capacity(bodies.len());
    for body in bodies {
        let item = match body[0] {
            SERIES_STATE => Restored::Series(decode_state(body).map_err(|e| LoadError::Damaged(e.to_string()))?),
            record::METADATA => {
                let mut md = Vec::new();
                record::decode_metadata(body, &mut md).map_err(|e| LoadError::Damaged(e.to_string()))?;
                Restored::Metadata(md)
            }
            t => return Err(LoadError::Damaged(format!("unknown record type {t}"))),
        };
        decoded.push(item);
    }
    let mut stats = CheckpointStats { series: 0, bytes: data.len() as u64 };
    for item in decoded {
        if matches!(item, Restored::Series(_)) {
            stats.series += 1;
        }
        apply(item);
    }
    Ok(stats)
}
