//! The write-ahead log of one tenant.
//!
//! ```text
//!  <data.dir>/wal/<tenant>/
//!     00000001  00000002  ...        segments: magic, then framed records
//!     checkpoint.00000002            head state before segment 2
//! ```
//!
//! Every accepted write is appended (one `write(2)`) before it is applied to
//! the head and acknowledged, so a killed process loses nothing: the data is
//! in the kernel's page cache. How often that is forced to disk, which is
//! what survives a machine crash, is the [`SyncMode`]. A new segment starts
//! when the current one passes the size limit, at every start, and when a
//! checkpoint is taken.

pub mod frame;
pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::warn;

use self::frame::{FrameReader, Next};

/// First bytes of every segment: format name and version.
pub const SEGMENT_MAGIC: &[u8; 8] = b"CAIRNW01";

/// When the WAL is forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Never fsync on the write path (segments are still synced when they
    /// are closed). Survives a process crash, not a machine crash.
    None,
    /// fsync in the background every sync interval. A machine crash loses
    /// at most that interval of acknowledged writes.
    Interval,
    /// fsync before every acknowledgement (concurrent writers share one
    /// fsync). Survives a machine crash.
    Always,
}

/// A place in the log: everything before it has been written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u32,
    pub offset: u64,
}

struct Writer {
    segment: u32,
    file: Arc<File>,
    /// Bytes of whole records (and the magic) in the segment: where the
    /// next record goes.
    size: u64,
    /// A failed write left bytes after `size` that could not be cut off
    /// yet; nothing is appended until they are.
    torn: bool,
}

/// The append side of a tenant's WAL.
pub struct Wal {
    dir: PathBuf,
    segment_size: u64,
    writer: Mutex<Writer>,
    /// Everything before this position is on stable storage.
    synced: Mutex<Position>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish()
    }
}

impl Wal {
    /// Opens `dir` for appending: a fresh segment numbered after every
    /// existing one.
    pub fn open(dir: &Path, segment_size: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let next = list_segments(dir)?.last().map_or(1, |n| n + 1);
        let (file, size) = create_segment(dir, next)?;
        Ok(Self {
            dir: dir.to_owned(),
            segment_size,
            writer: Mutex::new(Writer { segment: next, file: Arc::new(file), size, torn: false }),
            synced: Mutex::new(Position { segment: next, offset: 0 }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends already framed records with one write. Returns the position
    /// after them; they are durable against a process crash on return.
    ///
    /// A failed or short write (a full disk) is cut back to the last whole
    /// record before the error is returned, so that a later write is never
    /// appended after a torn record, which replay would stop at. If even
    /// that fails, every write fails until a retry of the cut succeeds.
    pub fn log(&self, data: &[u8]) -> io::Result<Position> {
        let mut w = self.writer.lock();
        if w.torn {
            w.file.set_len(w.size)?;
            w.torn = false;
        }
        if let Err(e) = write_segment(&w.file, data) {
            if let Err(cut) = w.file.set_len(w.size) {
                warn!(segment = w.segment, error = %cut, "cutting a failed wal write back failed; retried before the next write");
                w.torn = true;
            }
            return Err(e);
        }
        w.size += data.len() as u64;
        let pos = Position { segment: w.segment, offset: w.size };
        // The records are written: a failure to start the next segment must
        // not report them as lost. The segment grows past its target size
        // until a later write starts the next one.
        if w.size >= self.segment_size
            && let Err(e) = self.rotate(&mut w)
        {
            warn!(segment = w.segment, error = %e, "starting the next wal segment failed; retried after the next write");
        }
        Ok(pos)
    }

    /// Closes the current segment and starts the next. Returns the new
    /// segment's number: everything logged so far is in earlier segments.
    pub fn cut(&self) -> io::Result<u32> {
        let mut w = self.writer.lock();
        self.rotate(&mut w)?;
        Ok(w.segment)
    }

    #[allow(clippy::disallowed_methods, reason = "fsyncs; callers run it on the blocking pool")]
    fn rotate(&self, w: &mut Writer) -> io::Result<()> {
        w.file.sync_data()?;
        let done = Position { segment: w.segment, offset: w.size };
        let next = w.segment + 1;
        let (file, size) = create_segment(&self.dir, next)?;
        *w = Writer { segment: next, file: Arc::new(file), size, torn: false };
        let mut synced = self.synced.lock();
        if *synced < done {
            *synced = done;
        }
        Ok(())
    }

    /// Makes everything up to `pos` durable. Concurrent callers share one
    /// fsync: whoever holds the sync lock syncs for all that wait behind it.
    #[allow(clippy::disallowed_methods, reason = "fsyncs; callers run it on the blocking pool")]
    pub fn sync_through(&self, pos: Position) -> io::Result<()> {
        let mut synced = self.synced.lock();
        if *synced >= pos {
            return Ok(());
        }
        let (file, now) = {
            let w = self.writer.lock();
            (w.file.clone(), Position { segment: w.segment, offset: w.size })
        };
        // Earlier segments were synced when they were closed.
        file.sync_data()?;
        *synced = now;
        Ok(())
    }

    /// Makes everything logged so far durable.
    pub fn sync(&self) -> io::Result<()> {
        let now = {
            let w = self.writer.lock();
            Position { segment: w.segment, offset: w.size }
        };
        self.sync_through(now)
    }

    /// Bytes written to the current segment.
    pub fn current(&self) -> Position {
        let w = self.writer.lock();
        Position { segment: w.segment, offset: w.size }
    }

    /// Deletes segments numbered below `n` (they are covered by a checkpoint).
    pub fn remove_segments_before(&self, n: u32) -> io::Result<usize> {
        let mut removed = 0;
        for s in list_segments(&self.dir)? {
            if s < n {
                fs::remove_file(segment_path(&self.dir, s))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// One append to a segment. Tests make it fail part way, as a full disk
/// does.
fn write_segment(mut file: &File, data: &[u8]) -> io::Result<()> {
    #[cfg(test)]
    if let Some(n) = faults::take_short_write() {
        file.write_all(&data[..n.min(data.len())])?;
        return Err(io::Error::new(io::ErrorKind::StorageFull, "injected short write"));
    }
    file.write_all(data)
}

#[cfg(test)]
pub(crate) mod faults {
    use std::cell::Cell;

    thread_local! {
        static SHORT_WRITE: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// The next WAL write on this thread writes only `n` bytes and fails.
    pub(crate) fn short_write(n: usize) {
        SHORT_WRITE.with(|c| c.set(Some(n)));
    }

    pub(super) fn take_short_write() -> Option<usize> {
        SHORT_WRITE.with(|c| c.take())
    }
}

pub fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}"))
}

#[allow(clippy::disallowed_methods, reason = "fsyncs; callers run it on the blocking pool")]
fn create_segment(dir: &Path, n: u32) -> io::Result<(File, u64)> {
    let path = segment_path(dir, n);
    let mut file = OpenOptions::new().create_new(true).append(true).open(&path)?;
    file.write_all(SEGMENT_MAGIC)?;
    file.sync_data()?;
    sync_dir(dir)?;
    Ok((file, SEGMENT_MAGIC.len() as u64))
}

/// fsyncs a directory so that files created or renamed in it survive a
/// machine crash.
#[allow(clippy::disallowed_methods, reason = "fsyncs; callers run it on the blocking pool")]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Segment numbers in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 8
            && name.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = name.parse()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub segments: usize,
    pub records: usize,
    pub bytes: u64,
    /// Records whose checksum was right but whose body could not be decoded.
    pub skipped_records: usize,
    /// Where a torn or corrupt tail was cut off, if anywhere.
    pub truncated_at: Option<Position>,
    /// Segments after a corrupt one, moved aside rather than replayed.
    pub quarantined_segments: usize,
}

/// Feeds every record body of segments numbered `from` and up to `apply`, in
/// order. A torn or corrupt tail is truncated with a warning; segments after
/// a corrupt one are moved to a `corrupt-<ms>` folder, since records after a
/// gap cannot be trusted to apply in order. Never fails on bad data, only
/// on I/O errors.
pub fn replay<E: std::fmt::Display>(
    dir: &Path,
    from: u32,
    mut apply: impl FnMut(&[u8]) -> Result<(), E>,
) -> io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let segments: Vec<u32> = list_segments(dir)?.into_iter().filter(|s| *s >= from).collect();
    for (i, &seg) in segments.iter().enumerate() {
        let path = segment_path(dir, seg);
        let data = fs::read(&path)?;
        stats.segments += 1;
        stats.bytes += data.len() as u64;
        let damage = if data.len() < SEGMENT_MAGIC.len() || &data[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
            if data.iter().all(|b| *b == 0) {
                Some((0, "empty or zero-filled segment"))
            } else {
                Some((0, "bad segment header"))
            }
        } else {
            let mut r = FrameReader::new(&data, SEGMENT_MAGIC.len());
            loop {
                match r.next_record() {
                    Next::Record(body) => {
                        stats.records += 1;
                        if let Err(e) = apply(body) {
                            stats.skipped_records += 1;
                            warn!(segment = seg, offset = r.position(), error = %e, "skipped an undecodable wal record");
                        }
                    }
                    Next::End => break None,
                    Next::Corrupt { offset, reason } => break Some((offset, reason)),
                }
            }
        };
        if let Some((offset, reason)) = damage {
            let keep = if offset == 0 { 0 } else { offset as u64 };
            warn!(
                segment = seg,
                offset,
                reason,
                dropped_bytes = data.len() as u64 - keep,
                "wal segment has a torn or corrupt tail; truncating it"
            );
            if keep == 0 {
                fs::remove_file(&path)?;
            } else {
                OpenOptions::new().write(true).open(&path)?.set_len(keep)?;
            }
            stats.truncated_at = Some(Position { segment: seg, offset: keep });
            let later = &segments[i + 1..];
            if !later.is_empty() {
                let aside = dir.join(format!("corrupt-{}", cairn_common::time::now_ms()));
                fs::create_dir_all(&aside)?;
                for s in later {
                    fs::rename(segment_path(dir, *s), aside.join(format!("{s:08}")))?;
                }
                warn!(
                    count = later.len(),
                    folder = %aside.display(),
                    "moved wal segments after a corrupt one aside; they were not replayed"
                );
                stats.quarantined_segments = later.len();
            }
            sync_dir(dir)?;
            break;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::put_record(&mut out, body);
        out
    }

    fn bodies(dir: &Path) -> (Vec<Vec<u8>>, ReplayStats) {
        let mut got = Vec::new();
        let stats = replay::<String>(dir, 0, |b| {
            got.push(b.to_vec());
            Ok(())
        })
        .expect("replay");
        (got, stats)
    }

    #[test]
    fn logs_rotate_and_replay_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), 64).expect("open");
        for i in 0..20u8 {
            wal.log(&framed(&[1, i, i, i, i, i, i, i, i, i])).expect("log");
        }
        wal.sync().expect("sync");
        assert!(list_segments(dir.path()).expect("list").len() > 3, "rotated by size");
        let (got, stats) = bodies(dir.path());
        assert_eq!(got.len(), 20);
        assert_eq!(got[19][1], 19);
        assert_eq!(stats.truncated_at, None);
        // A new writer starts after existing segments.
        let before = list_segments(dir.path()).expect("list");
        let wal2 = Wal::open(dir.path(), 64).expect("reopen");
        assert_eq!(wal2.current().segment, before.last().copied().unwrap_or(0) + 1);
    }

    #[test]
    fn torn_tail_is_truncated_and_later_segments_quarantined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), 1 << 20).expect("open");
        wal.log(&framed(b"\x01first")).expect("log");
        wal.log(&framed(b"\x01second")).expect("log");
        let seg = wal.cut().expect("cut");
        wal.log(&framed(b"\x01third")).expect("log");
        drop(wal);
        // Tear the last record of segment 1 and leave segment 2 behind it.
        let p = segment_path(dir.path(), seg - 1);
        let len = fs::metadata(&p).expect("meta").len();
        OpenOptions::new().write(true).open(&p).expect("open").set_len(len - 3).expect("truncate");
        let (got, stats) = bodies(dir.path());
        assert_eq!(got, vec![b"\x01first".to_vec()]);
        assert_eq!(stats.quarantined_segments, 1);
        assert!(stats.truncated_at.is_some());
        // Replay again: clean now, and the segment was truncated on disk.
        let (got, stats) = bodies(dir.path());
        assert_eq!(got.len(), 1);
        assert_eq!(stats.truncated_at, None);
    }

    #[test]
    fn a_failed_write_is_cut_back_and_later_writes_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), 1 << 20).expect("open");
        wal.log(&framed(b"\x01first")).expect("log");
        faults::short_write(5);
        assert!(wal.log(&framed(b"\x01torn by a full disk")).is_err());
        wal.log(&framed(b"\x01after")).expect("log");
        drop(wal);
        let (got, stats) = bodies(dir.path());
        assert_eq!(got, vec![b"\x01first".to_vec(), b"\x01after".to_vec()]);
        assert_eq!(stats.truncated_at, None, "no torn record on disk");
    }

    #[test]
    fn a_failed_rotation_still_acknowledges_the_written_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), 16).expect("open");
        // The next segment cannot be created while a directory holds its name.
        fs::create_dir(segment_path(dir.path(), 2)).expect("block the next segment");
        let pos = wal.log(&framed(b"\x01past the segment size")).expect("written, so acknowledged");
        assert_eq!(pos.segment, 1);
        wal.log(&framed(b"\x01again")).expect("log");
        fs::remove_dir(segment_path(dir.path(), 2)).expect("unblock");
        wal.log(&framed(b"\x01then rotated")).expect("log");
        assert_eq!(wal.log(&framed(b"\x01next")).expect("log").segment, 2);
        drop(wal);
        let (got, _) = bodies(dir.path());
        let want: Vec<&[u8]> = vec![b"\x01past the segment size", b"\x01again", b"\x01then rotated", b"\x01next"];
        assert_eq!(got, want);
    }

    #[test]
    fn garbage_segment_never_fails_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(segment_path(dir.path(), 1), b"not a wal at all").expect("write");
        fs::write(segment_path(dir.path(), 2), [0u8; 100]).expect("write");
        let (got, stats) = bodies(dir.path());
        assert!(got.is_empty());
        assert_eq!(stats.quarantined_segments, 1);
    }
}
