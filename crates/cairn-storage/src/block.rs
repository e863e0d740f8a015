//! The block format, version 1: one Parquet file per block, one row per
//! series (docs/design/block-format.md has the schema and the measurements
//! behind it).
//!
//! Writing: [`BlockWriter`] takes series in [`row_order`] and writes label
//! columns, per-series time bounds, timestamps and values. A series whose
//! values are all exact decimals is stored as integers scaled by `10^scale`
//! (delta-encoded, which is what makes blocks small); any other series keeps
//! its doubles bit for bit.
//!
//! Reading: [`BlockReader`] prunes row groups by the statistics of the label
//! columns a query's matchers name, reads only those label columns to find
//! the matching rows, then reads labels and samples of just those rows.

use std::cmp::Ordering;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Builder, Int8Builder, Int64Array, Int64Builder, ListBuilder,
    StringDictionaryBuilder,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int8Type, Int32Type, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use cairn_common::storage::{ReadContext, Series, series_bytes};
use cairn_common::{Label, Labels, Matcher, Sample};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;

use crate::meta::FORMAT_VERSION;
use crate::parquet_guard;
use crate::{Error, Result};

/// Prefix of the column holding a label: `l___name__`, `l_job`, ...
pub const LABEL_PREFIX: &str = "l_";
pub const COL_MIN_TIME: &str = "min_time";
pub const COL_MAX_TIME: &str = "max_time";
pub const COL_TIMESTAMPS: &str = "timestamps";
pub const COL_VALUE_SCALE: &str = "value_scale";
pub const COL_VALUES_INT: &str = "values_int";
pub const COL_VALUES_FLOAT: &str = "values_float";

/// Key-value metadata keys in the Parquet footer.
pub const KV_FORMAT_VERSION: &str = "cairn.format.version";
pub const KV_BLOCK_ID: &str = "cairn.block.id";

/// Largest decimal scale tried: values with up to nine decimals (nanosecond
/// clocks in seconds) are stored as integers.
const MAX_SCALE: usize = 9;
/// `10^scale`, exactly representable as doubles.
const POW10: [f64; MAX_SCALE + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// Scaled integers stay below 2^53 so that they convert to doubles exactly.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// Rows are sorted by metric name, then by label set: a query for one
/// metric reads a contiguous run of rows, and the statistics of
/// `l___name__` prune every row group outside it.
pub fn row_order(a: &Labels, b: &Labels) -> Ordering {
    a.metric_name().unwrap_or("").cmp(b.metric_name().unwrap_or("")).then_with(|| a.cmp(b))
}

/// The smallest scale at which every value is an integer `n` with
/// `n / 10^scale` giving back the value's exact bits, if there is one.
pub fn decimal_scale(values: impl Iterator<Item = f64> + Clone) -> Option<i8> {
    'scale: for (scale, &m) in POW10.iter().enumerate() {
        for v in values.clone() {
            // Check through the integer actually stored, so that -0 (which
            // becomes 0) is refused.
            let n = (v * m).round();
            if !n.is_finite() || n.abs() >= MAX_EXACT_INT || ((n as i64) as f64 / m).to_bits() != v.to_bits() {
                continue 'scale;
            }
        }
        return Some(scale as i8);
    }
    None
}

/// Tuning of the writer; the defaults are what the format was measured with.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Level 6 makes blocks about 3% smaller than level 3 for a few times
    /// the compression CPU, spent once per block in the background.
    pub zstd_level: i32,
    /// Series per row group.
    pub row_group_series: usize,
    /// Target size of an uncompressed data page: smaller pages let a
    /// selective query read less, at a small cost in size.
    pub page_bytes: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self { zstd_level: 6, row_group_series: 5_000, page_bytes: 64 * 1024 }
    }
}

/// What a finished block holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub series: u64,
    pub samples: u64,
    /// Times of the oldest and newest sample (`i64::MAX`/`MIN` when empty).
    pub min_time: i64,
    pub max_time: i64,
}

/// Rows buffered before they go to the Parquet writer.
const BATCH_ROWS: usize = 1_024;

/// Writes one block file. Series must come in [`row_order`], each with its
/// samples sorted by time.
pub struct BlockWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    /// Label names in column order, and their builders.
    names: Vec<String>,
    labels: Vec<StringDictionaryBuilder<Int32Type>>,
    min_time: Int64Builder,
    max_time: Int64Builder,
    timestamps: ListBuilder<Int64Builder>,
    scales: Int8Builder,
    ints: ListBuilder<Int64Builder>,
    floats: ListBuilder<Float64Builder>,
    rows: usize,
    last: Option<Labels>,
    stats: BlockStats,
}

fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(t, false)))
}

/// The Arrow schema of a block with these label names (sorted, unique).
pub fn schema(label_names: &[String]) -> SchemaRef {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut fields: Vec<Field> =
        label_names.iter().map(|n| Field::new(format!("{LABEL_PREFIX}{n}"), dict.clone(), true)).collect();
    fields.extend([
        Field::new(COL_MIN_TIME, DataType::Int64, false),
        Field::new(COL_MAX_TIME, DataType::Int64, false),
        Field::new(COL_TIMESTAMPS, list_of(DataType::Int64), false),
        Field::new(COL_VALUE_SCALE, DataType::Int8, true),
        Field::new(COL_VALUES_INT, list_of(DataType::Int64), true),
        Field::new(COL_VALUES_FLOAT, list_of(DataType::Float64), true),
    ]);
    Arc::new(Schema::new(fields))
}

fn writer_properties(id: &str, opts: &WriteOptions) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(opts.zstd_level)?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_series.max(1)))
        .set_data_page_size_limit(opts.page_bytes.max(1024))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(KV_FORMAT_VERSION.into(), FORMAT_VERSION.to_string()),
            KeyValue::new(KV_BLOCK_ID.into(), id.to_owned()),
        ]));
    for (col, enc) in [
        (COL_TIMESTAMPS, Encoding::DELTA_BINARY_PACKED),
        (COL_VALUES_INT, Encoding::DELTA_BINARY_PACKED),
        (COL_VALUES_FLOAT, Encoding::BYTE_STREAM_SPLIT),
    ] {
        let path = ColumnPath::new(vec![col.into(), "list".into(), "item".into()]);
        b = b.set_column_dictionary_enabled(path.clone(), false).set_column_encoding(path, enc);
    }
    for col in [COL_MIN_TIME, COL_MAX_TIME] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(col), false);
    }
    Ok(b.build())
}

impl<W: Write + Send> BlockWriter<W> {
    /// A writer for a block whose series carry (some of) these label names.
    pub fn new(out: W, id: &str, label_names: impl IntoIterator<Item = String>, opts: &WriteOptions) -> Result<Self> {
        let mut names: Vec<String> = label_names.into_iter().collect();
        names.sort();
        names.dedup();
        let schema = schema(&names);
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(writer_properties(id, opts)?))?;
        let item = |t| Arc::new(Field::new_list_field(t, false));
        Ok(Self {
            writer,
            schema,
            labels: names.iter().map(|_| StringDictionaryBuilder::new()).collect(),
            names,
            min_time: Int64Builder::new(),
            max_time: Int64Builder::new(),
            timestamps: ListBuilder::new(Int64Builder::new()).with_field(item(DataType::Int64)),
            scales: Int8Builder::new(),
            ints: ListBuilder::new(Int64Builder::new()).with_field(item(DataType::Int64)),
            floats: ListBuilder::new(Float64Builder::new()).with_field(item(DataType::Float64)),
            rows: 0,
            last: None,
            stats: BlockStats { min_time: i64::MAX, max_time: i64::MIN, ..Default::default() },
        })
    }

    /// Appends one series. Series without samples are skipped.
    pub fn append(&mut self, labels: &Labels, samples: &[Sample]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        if let Some(last) = &self.last
            && row_order(last, labels) != Ordering::Less
        {
            return Err(Error::Invalid(format!("series {labels:?} out of order after {last:?}")));
        }
        if samples.windows(2).any(|w| w[0].t >= w[1].t) {
            return Err(Error::Invalid(format!("samples of {labels:?} not strictly ascending in time")));
        }
        // Labels: one column per name; a name the block was not opened with is a caller bug.
        let mut it = labels.iter().peekable();
        for (name, col) in self.names.iter().zip(&mut self.labels) {
            match it.peek() {
                Some(l) if l.name == *name => {
                    col.append_value(&l.value);
                    it.next();
                }
                _ => col.append_null(),
            }
        }
        if let Some(l) = it.next() {
            return Err(Error::Invalid(format!("label {:?} not declared when the block was opened", l.name)));
        }
        let (first, last) = (samples[0].t, samples[samples.len() - 1].t);
        self.min_time.append_value(first);
        self.max_time.append_value(last);
        self.timestamps.values().append_slice(&samples.iter().map(|s| s.t).collect::<Vec<_>>());
        self.timestamps.append(true);
        match decimal_scale(samples.iter().map(|s| s.v)) {
            Some(scale) => {
                let m = POW10[scale as usize];
                for s in samples {
                    self.ints.values().append_value((s.v * m).round() as i64);
                }
                self.ints.append(true);
                self.scales.append_value(scale);
                self.floats.append_null();
            }
            None => {
                for s in samples {
                    self.floats.values().append_value(s.v);
                }
                self.floats.append(true);
                self.scales.append_null();
                self.ints.append_null();
            }
        }
        self.stats.series += 1;
        self.stats.samples += samples.len() as u64;
        self.stats.min_time = self.stats.min_time.min(first);
        self.stats.max_time = self.stats.max_time.max(last);
        self.last = Some(labels.clone());
        self.rows += 1;
        if self.rows >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut cols: Vec<ArrayRef> = self.labels.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        cols.push(Arc::new(self.min_time.finish()));
        cols.push(Arc::new(self.max_time.finish()));
        cols.push(Arc::new(self.timestamps.finish()));
        cols.push(Arc::new(self.scales.finish()));
        cols.push(Arc::new(self.ints.finish()));
        cols.push(Arc::new(self.floats.finish()));
        let batch = RecordBatch::try_new(self.schema.clone(), cols)?;
        self.writer.write(&batch)?;
        self.rows = 0;
        Ok(())
    }

    /// Writes the footer and returns what the block holds.
    pub fn finish(mut self) -> Result<BlockStats> {
        self.flush_batch()?;
        self.writer.close()?;
        Ok(self.stats)
    }
}

/// Reads a block file's column data from object storage by ranges,
/// counting the bytes it fetches (for the `bytes read` metric, and for
/// tests that check how little a selective query reads). Each fetched
/// range has its page headers checked (`parquet_guard`) before the decoder
/// sees them.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    counter: Arc<dyn Fn(u64) + Send + Sync>,
    pages: Arc<Pages>,
    /// Column chunks (byte ranges, sorted) whose pages' repetition levels
    /// are checked too: those of repeated columns in which the read skips
    /// rows (see [`parquet_guard::check_pages`]).
    repeated: Vec<(Range<u64>, parquet_guard::Repeated)>,
}

impl ObjectReader {
    fn check(&self, range: &Range<u64>, got: &Bytes) -> parquet::errors::Result<()> {
        let first = self.pages.offsets.partition_point(|&p| p <= range.start);
        let starts =
            self.pages.offsets[first..].iter().take_while(|&&p| p < range.end).map(|&p| (p - range.start) as usize);
        let chunk = self.repeated.partition_point(|(c, _)| c.start <= range.start);
        let repeated = chunk.checked_sub(1).map(|i| &self.repeated[i]).filter(|(c, _)| range.start < c.end);
        let checked = |at: usize| self.pages.levels_checked(range.start + at as u64);
        let newly = parquet_guard::check_pages(got, starts, repeated.map(|(_, r)| *r), &checked)
            .map_err(|msg| ParquetError::General(format!("bytes {}..{}: {msg}", range.start, range.end)))?;
        for at in newly {
            self.pages.set_levels_checked(range.start + at as u64);
        }
        Ok(())
    }
}

/// The pages the offset index lists, and which of them had their
/// repetition levels checked (shared by a block's reads: a block never
/// changes).
struct Pages {
    /// File offsets, sorted.
    offsets: Vec<u64>,
    /// One bit a page of `offsets`.
    levels_checked: Vec<AtomicU64>,
}

impl Pages {
    fn new(metadata: &ParquetMetaData) -> Self {
        let mut offsets: Vec<u64> = (metadata.offset_index().into_iter().flatten().flatten())
            .flat_map(|column| column.page_locations().iter().map(|p| p.offset as u64))
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        let levels_checked = (0..offsets.len().div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Self { offsets, levels_checked }
    }

    /// The word and mask of the bit of the page at file offset `at`.
    fn bit(&self, at: u64) -> Option<(&AtomicU64, u64)> {
        let i = self.offsets.binary_search(&at).ok()?;
        Some((&self.levels_checked[i / 64], 1 << (i % 64)))
    }

    fn levels_checked(&self, at: u64) -> bool {
        self.bit(at).is_some_and(|(word, mask)| word.load(Relaxed) & mask != 0)
    }

    /// Notes that the page at `at` had its levels checked (no-op for a
    /// page the offset index does not list).
    fn set_levels_checked(&self, at: u64) {
        if let Some((word, mask)) = self.bit(at) {
            word.fetch_or(mask, Relaxed);
        }
    }

    fn memory_size(&self) -> usize {
        self.offsets.len() * size_of::<u64>() + self.levels_checked.len() * size_of::<AtomicU64>()
    }
}

/// Bytes fetched from the end of the file when the footer is loaded: the
/// footer and page index of most blocks fit, so they take one request.
const FOOTER_PREFETCH: u64 = 256 * 1024;

impl AsyncFileReader for ObjectReader {
    // Bytes are counted once they arrived: a fetch that hangs reads nothing
    // (the store tells a hung object store from a slow query by this).
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            let got = self
                .store
                .get_range(&self.path, range.clone())
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))?;
            (self.counter)(got.len() as u64);
            self.check(&range, &got)?;
            Ok(got)
        })
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        Box::pin(async move {
            let got =
                self.store.get_ranges(&self.path, &ranges).await.map_err(|e| ParquetError::External(Box::new(e)))?;
            (self.counter)(got.iter().map(|b| b.len() as u64).sum());
            for (range, got) in ranges.iter().zip(&got) {
                self.check(range, got)?;
            }
            Ok(got)
        })
    }

    // The footer is loaded and checked by `BlockReader::open`, and readers
    // are built with it; the decoder never loads it through this reader.
    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async { Err(ParquetError::General("block metadata is loaded by BlockReader::open".into())) })
    }
}

/// One block file in object storage, its footer and page index loaded.
#[derive(Clone)]
pub struct BlockReader {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    size: u64,
    meta: ArrowReaderMetadata,
    counter: Arc<dyn Fn(u64) + Send + Sync>,
    pages: Arc<Pages>,
}

impl std::fmt::Debug for BlockReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockReader").field("path", &self.path).field("size", &self.size).finish()
    }
}

/// Runs a read of `block`. The Parquet decoder can panic on malformed data
/// (found by fuzzing): that becomes a corrupt-block error, not a dead task.
async fn guarded<T>(block: &object_store::path::Path, read: impl Future<Output = Result<T>>) -> Result<T> {
    cairn_common::task::catch_panic_async(read).await.unwrap_or_else(|panic| {
        Err(Error::Corrupt { block: block.to_string(), msg: format!("the Parquet reader failed: {panic}") })
    })
}

/// Loads the footer and page index of a block: the tail of the file, the
/// footer if it is longer, and the page index if it lies before both.
/// Each structure is checked (`parquet_guard`) before the decoder parses
/// the bytes, which it then does from this buffer alone.
async fn load_metadata(
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
    size: u64,
    counter: &(dyn Fn(u64) + Send + Sync),
) -> Result<ParquetMetaData> {
    let corrupt = |msg: String| Error::Corrupt { block: path.to_string(), msg };
    if size < 12 {
        return Err(corrupt(format!("{size} bytes is too small for a Parquet file")));
    }
    let fetch = |range: Range<u64>| async move {
        let got = store.get_range(path, range).await?;
        counter(got.len() as u64);
        Ok::<_, Error>(got)
    };
    let mut start = size.saturating_sub(FOOTER_PREFETCH);
    let mut tail = fetch(start..size).await?;
    let trailer = &tail[tail.len() - 8..];
    if &trailer[4..] != b"PAR1" {
        return Err(corrupt("the file does not end in the Parquet magic".into()));
    }
    let footer_len = u64::from(u32::from_le_bytes(trailer[..4].try_into().expect("four bytes")));
    let footer_start = (size - 8)
        .checked_sub(footer_len)
        .filter(|&s| s >= 4)
        .ok_or_else(|| corrupt(format!("a footer of {footer_len} bytes does not fit in a file of {size}")))?;
    let prepend = |tail: Bytes, more: Bytes| {
        let mut all = Vec::with_capacity(more.len() + tail.len());
        all.extend_from_slice(&more);
        all.extend_from_slice(&tail);
        Bytes::from(all)
    };
    if footer_start < start {
        tail = prepend(tail, fetch(footer_start..start).await?);
        start = footer_start;
    }
    let indexes =
        parquet_guard::check_footer(&tail[(footer_start - start) as usize..tail.len() - 8]).map_err(corrupt)?;
    // Page index structures lie between the column data and the footer.
    let mut structs = Vec::new();
    for location in indexes {
        for ((offset, len), column) in [(location.offset_index, false), (location.column_index, true)]
            .into_iter()
            .filter_map(|(l, c)| Some((l?, c)))
        {
            let range = u64::try_from(offset)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(o, l)| Some(o..o.checked_add(l)?))
                .filter(|r| r.start >= 4 && r.end <= footer_start)
                .ok_or_else(|| corrupt(format!("a page index at {offset} of {len} bytes is outside the file")))?;
            structs.push((range, column));
        }
    }
    if let Some(first) = structs.iter().map(|(r, _)| r.start).min()
        && first < start
    {
        tail = prepend(tail, fetch(first..start).await?);
        start = first;
    }
    for (range, column) in &structs {
        let bytes = &tail[(range.start - start) as usize..(range.end - start) as usize];
        let checked =
            if *column { parquet_guard::check_column_index(bytes) } else { parquet_guard::check_offset_index(bytes) };
        checked.map_err(corrupt)?;
    }
    let mut reader = ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Optional);
    reader.try_parse_sized(&tail, size)?;
    Ok(reader.finish()?)
}

/// Which rows a read wants: all matchers match, samples overlap `[start, end]`.
struct RowFilter<'a> {
    matchers: &'a [Matcher],
    start: i64,
    end: i64,
}

impl BlockReader {
    /// Loads the footer (and page index) of `path`, `size` bytes long.
    /// `counter` is told the size of every fetch.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        path: object_store::path::Path,
        size: u64,
        counter: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Self> {
        let block = path.clone();
        guarded(&block, Self::open_unguarded(store, path, size, counter)).await
    }

    async fn open_unguarded(
        store: Arc<dyn ObjectStore>,
        path: object_store::path::Path,
        size: u64,
        counter: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Self> {
        let metadata = load_metadata(&store, &path, size, counter.as_ref()).await?;
        let opts = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let meta = ArrowReaderMetadata::try_new(Arc::new(metadata), opts)?;
        let pages = Arc::new(Pages::new(meta.metadata()));
        let reader = Self { store, path, size, meta, counter, pages };
        reader.check_version()?;
        Ok(reader)
    }

    fn check_version(&self) -> Result<()> {
        let v = self.key_value(KV_FORMAT_VERSION).unwrap_or_default();
        let version: u32 = v
            .parse()
            .map_err(|_| Error::Corrupt { block: self.path.to_string(), msg: format!("format version {v:?}") })?;
        if version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { block: self.path.to_string(), version, supported: FORMAT_VERSION });
        }
        Ok(())
    }

    pub fn key_value(&self, key: &str) -> Option<String> {
        self.meta
            .metadata()
            .file_metadata()
            .key_value_metadata()?
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
    }

    /// Heap bytes the loaded footer and page index take.
    pub fn memory_size(&self) -> usize {
        self.meta.metadata().memory_size() + self.pages.memory_size()
    }

    pub fn rows(&self) -> usize {
        self.meta.metadata().file_metadata().num_rows() as usize
    }

    /// Label names of this block's label columns.
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.meta.schema().fields().iter().filter_map(|f| f.name().strip_prefix(LABEL_PREFIX))
    }

    /// Indices of the label columns.
    fn label_roots(&self) -> Vec<usize> {
        let fields = self.meta.schema().fields();
        (0..fields.len()).filter(|&i| fields[i].name().starts_with(LABEL_PREFIX)).collect()
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.meta.schema().index_of(name).ok()
    }

    /// A reader of the column data of row groups `groups`, of which the
    /// read takes the rows `selection` picks (all when `None`).
    fn input(&self, groups: &[usize], selection: Option<&RowSelection>) -> ObjectReader {
        ObjectReader {
            store: self.store.clone(),
            path: self.path.clone(),
            counter: self.counter.clone(),
            pages: self.pages.clone(),
            repeated: selection.map(|s| self.partly_read_repeated_chunks(groups, s)).unwrap_or_default(),
        }
    }

    /// The repeated column chunks of the row groups in which `selection`
    /// skips some rows but not all (of every group, if the selection does
    /// not add up to the groups' rows), with how their pages are stored.
    fn partly_read_repeated_chunks(
        &self,
        groups: &[usize],
        selection: &RowSelection,
    ) -> Vec<(Range<u64>, parquet_guard::Repeated)> {
        let md = self.meta.metadata();
        let schema = md.file_metadata().schema_descr();
        let rows: Vec<Option<usize>> =
            groups.iter().map(|&g| usize::try_from(md.row_group(g).num_rows()).ok()).collect();
        let consistent = rows.iter().try_fold(0usize, |sum, r| sum.checked_add((*r)?))
            == Some(selection.row_count() + selection.skipped_row_count());
        let mut rest = selection.clone();
        let mut out = Vec::new();
        for (&g, rows) in groups.iter().zip(rows) {
            if consistent {
                let rows = rows.unwrap_or_default();
                let selected = rest.split_off(rows).row_count();
                if selected == 0 || selected == rows {
                    continue;
                }
            }
            let group = md.row_group(g);
            for c in 0..schema.num_columns().min(group.num_columns()) {
                let zstd = match group.column(c).compression() {
                    Compression::ZSTD(_) => true,
                    Compression::UNCOMPRESSED => false,
                    // The decoder has no other codec.
                    _ => continue,
                };
                let max_rep = schema.column(c).max_rep_level();
                if max_rep > 0 {
                    let (start, len) = group.column(c).byte_range();
                    let bit_width = (u16::BITS - max_rep.unsigned_abs().leading_zeros()) as u8;
                    out.push((start..start.saturating_add(len), parquet_guard::Repeated { bit_width, zstd }));
                }
            }
        }
        out.sort_by_key(|(r, _)| r.start);
        out
    }

    /// Row groups whose label statistics allow a match.
    fn row_groups(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<usize> {
        let md = self.meta.metadata();
        let (min_col, max_col) = (self.column(COL_MIN_TIME), self.column(COL_MAX_TIME));
        (0..md.num_row_groups())
            .filter(|&rg| {
                let group = md.row_group(rg);
                // Time: the group's newest series ends before the range, or its oldest starts after.
                if let (Some(mi), Some(ma)) = (min_col, max_col) {
                    let min_of = |c: usize| match group.column(c).statistics() {
                        Some(Statistics::Int64(s)) => s.min_opt().copied(),
                        _ => None,
                    };
                    let max_of = |c: usize| match group.column(c).statistics() {
                        Some(Statistics::Int64(s)) => s.max_opt().copied(),
                        _ => None,
                    };
                    if max_of(ma).is_some_and(|t| t < start) || min_of(mi).is_some_and(|t| t > end) {
                        return false;
                    }
                }
                matchers.iter().all(|m| {
                    let Some(values) = m.exact_values() else { return true };
                    let Some(c) = self.leaf(&format!("{LABEL_PREFIX}{}", m.name)) else {
                        // The label is absent from the block: `name="v"` with v non-empty never matches.
                        return false;
                    };
                    match group.column(c).statistics() {
                        Some(Statistics::ByteArray(s)) => match (s.min_opt(), s.max_opt()) {
                            (Some(lo), Some(hi)) => values.iter().any(|v| {
                                let v = v.as_bytes();
                                lo.data() <= v && v <= hi.data()
                            }),
                            // Only nulls in this group.
                            _ => false,
                        },
                        _ => true,
                    }
                })
            })
            .collect()
    }

    /// Index of a top-level column among the Parquet leaves.
    fn leaf(&self, name: &str) -> Option<usize> {
        let schema = self.meta.metadata().file_metadata().schema_descr();
        (0..schema.num_columns()).find(|&i| schema.column(i).path().parts()[0] == name)
    }

    /// Series matching all `matchers` with their samples in `[start, end]`
    /// (with `latest_only`, the newest only), in row order. An absent
    /// label reads as the empty value. Batches are decoded as they arrive
    /// and `budget` is charged per series, so a query over its limit stops
    /// reading.
    pub async fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        latest_only: bool,
        budget: Option<&dyn ReadContext>,
    ) -> Result<Vec<Series>> {
        guarded(&self.path, self.select_unguarded(matchers, start, end, latest_only, budget)).await
    }

    async fn select_unguarded(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        latest_only: bool,
        budget: Option<&dyn ReadContext>,
    ) -> Result<Vec<Series>> {
        let Some((groups, selection)) = self.matching_rows(&RowFilter { matchers, start, end }).await? else {
            return Ok(Vec::new());
        };
        let schema = self.meta.metadata().file_metadata().schema_descr_ptr();
        let mut roots = self.label_roots();
        for c in [COL_TIMESTAMPS, COL_VALUE_SCALE, COL_VALUES_INT, COL_VALUES_FLOAT] {
            roots.extend(self.column(c));
        }
        let input = self.input(&groups, Some(&selection));
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(input, self.meta.clone())
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_projection(ProjectionMask::roots(&schema, roots))
            .build()?;
        futures::pin_mut!(stream);
        let mut out = Vec::new();
        while let Some(batch) = stream.try_next().await? {
            let from = out.len();
            decode_series(&batch, start, end, latest_only, &mut out)?;
            if let Some(b) = budget {
                for s in &out[from..] {
                    b.charge(series_bytes(s.samples.len())).map_err(Error::Limit)?;
                }
            }
        }
        Ok(out)
    }

    /// Label sets of the series matching all `matchers` whose time span
    /// overlaps `[start, end]` (as the head answers), in row order.
    pub async fn series(&self, matchers: &[Matcher], start: i64, end: i64) -> Result<Vec<Labels>> {
        guarded(&self.path, self.series_unguarded(matchers, start, end)).await
    }

    async fn series_unguarded(&self, matchers: &[Matcher], start: i64, end: i64) -> Result<Vec<Labels>> {
        let Some((groups, selection)) = self.matching_rows(&RowFilter { matchers, start, end }).await? else {
            return Ok(Vec::new());
        };
        let schema = self.meta.metadata().file_metadata().schema_descr_ptr();
        let label_cols = self.label_roots();
        let input = self.input(&groups, Some(&selection));
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(input, self.meta.clone())
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_projection(ProjectionMask::roots(&schema, label_cols))
            .build()?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        let mut out = Vec::new();
        for batch in &batches {
            let cols = label_columns(batch)?;
            for row in 0..batch.num_rows() {
                out.push(row_labels(&cols, row));
            }
        }
        Ok(out)
    }

    /// Distinct values of label `name` on the series matching all
    /// `matchers` with samples in `[start, end]`.
    pub async fn label_values(&self, name: &str, matchers: &[Matcher], start: i64, end: i64) -> Result<Vec<String>> {
        guarded(&self.path, self.label_values_unguarded(name, matchers, start, end)).await
    }

    async fn label_values_unguarded(
        &self,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>> {
        let Some(col) = self.column(&format!("{LABEL_PREFIX}{name}")) else { return Ok(Vec::new()) };
        let Some((groups, selection)) = self.matching_rows(&RowFilter { matchers, start, end }).await? else {
            return Ok(Vec::new());
        };
        let schema = self.meta.metadata().file_metadata().schema_descr_ptr();
        let input = self.input(&groups, Some(&selection));
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(input, self.meta.clone())
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_projection(ProjectionMask::roots(&schema, [col]))
            .build()?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        let mut values = std::collections::BTreeSet::new();
        for batch in &batches {
            let cols = label_columns(batch)?;
            for row in 0..batch.num_rows() {
                values.extend(row_labels(&cols, row).into_vec().into_iter().map(|l| l.value));
            }
        }
        Ok(values.into_iter().collect())
    }

    /// The row groups to read and the rows within them that match, or
    /// `None` when nothing can match.
    async fn matching_rows(&self, f: &RowFilter<'_>) -> Result<Option<(Vec<usize>, RowSelection)>> {
        if f.matchers.is_empty() {
            return Ok(None);
        }
        // Matchers on labels this block lacks see the empty value on every row.
        let mut on_columns = Vec::new();
        for m in f.matchers {
            match self.column(&format!("{LABEL_PREFIX}{}", m.name)) {
                Some(c) => on_columns.push((c, m)),
                None if m.matches("") => {}
                None => return Ok(None),
            }
        }
        let groups = self.row_groups(f.matchers, f.start, f.end);
        if groups.is_empty() {
            return Ok(None);
        }
        let (min_col, max_col) = (self.column(COL_MIN_TIME), self.column(COL_MAX_TIME));
        let mut roots: Vec<usize> = on_columns.iter().map(|(c, _)| *c).collect();
        roots.extend(min_col);
        roots.extend(max_col);
        roots.sort_unstable();
        roots.dedup();
        let schema = self.meta.metadata().file_metadata().schema_descr_ptr();
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(self.input(&groups, None), self.meta.clone())
            .with_row_groups(groups.clone())
            .with_projection(ProjectionMask::roots(&schema, roots))
            .build()?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        let mut masks = Vec::with_capacity(batches.len());
        let mut any = false;
        for batch in &batches {
            let mut keep = vec![true; batch.num_rows()];
            if let (Some(lo), Some(hi)) = (batch.column_by_name(COL_MIN_TIME), batch.column_by_name(COL_MAX_TIME)) {
                let (lo, hi) = (lo.as_primitive::<Int64Type>(), hi.as_primitive::<Int64Type>());
                for (row, k) in keep.iter_mut().enumerate() {
                    *k = hi.value(row) >= f.start && lo.value(row) <= f.end;
                }
            }
            for (_, m) in &on_columns {
                let name = format!("{LABEL_PREFIX}{}", m.name);
                let col = batch.column_by_name(&name).ok_or_else(|| self.corrupt(format!("column {name} missing")))?;
                apply_matcher(col, m, &mut keep).map_err(|msg| self.corrupt(msg))?;
            }
            any |= keep.iter().any(|&k| k);
            masks.push(BooleanArray::from(keep));
        }
        if !any {
            return Ok(None);
        }
        Ok(Some((groups, RowSelection::from_filters(&masks))))
    }

    fn corrupt(&self, msg: String) -> Error {
        Error::Corrupt { block: self.path.to_string(), msg }
    }
}

/// Narrows `keep` to the rows whose value of the label column matches.
/// Dictionary columns evaluate the matcher once per distinct value.
fn apply_matcher(col: &ArrayRef, m: &Matcher, keep: &mut [bool]) -> std::result::Result<(), String> {
    match col.data_type() {
        DataType::Dictionary(_, _) => {
            let dict = col.as_dictionary_opt::<Int32Type>().ok_or("label column with a non-int32 dictionary")?;
            let values = dict.values().as_string_opt::<i32>().ok_or("label dictionary of non-strings")?;
            let verdicts: Vec<bool> = (0..values.len()).map(|i| m.matches(values.value(i))).collect();
            let null_verdict = m.matches("");
            for (row, k) in keep.iter_mut().enumerate() {
                if *k {
                    *k = if dict.is_null(row) { null_verdict } else { verdicts[dict.keys().value(row) as usize] };
                }
            }
        }
        DataType::Utf8 => {
            let s = col.as_string::<i32>();
            for (row, k) in keep.iter_mut().enumerate() {
                if *k {
                    *k = m.matches(if s.is_null(row) { "" } else { s.value(row) });
                }
            }
        }
        other => return Err(format!("label column of type {other}")),
    }
    Ok(())
}

/// A label column as a lookup of the value at a row.
enum LabelColumn<'a> {
    Dict { name: &'a str, keys: &'a arrow::array::Int32Array, values: &'a arrow::array::StringArray },
    Plain { name: &'a str, values: &'a arrow::array::StringArray },
}

fn label_columns(batch: &RecordBatch) -> Result<Vec<LabelColumn<'_>>> {
    let schema = batch.schema_ref();
    let mut cols = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let Some(name) = field.name().strip_prefix(LABEL_PREFIX) else { continue };
        let col = batch.column(i);
        let bad = || Error::Invalid(format!("label column {} has type {}", field.name(), col.data_type()));
        cols.push(match col.data_type() {
            DataType::Dictionary(_, _) => {
                let d = col.as_dictionary_opt::<Int32Type>().ok_or_else(bad)?;
                LabelColumn::Dict { name, keys: d.keys(), values: d.values().as_string_opt::<i32>().ok_or_else(bad)? }
            }
            DataType::Utf8 => LabelColumn::Plain { name, values: col.as_string::<i32>() },
            _ => return Err(bad()),
        });
    }
    Ok(cols)
}

fn row_labels(cols: &[LabelColumn<'_>], row: usize) -> Labels {
    let mut labels = Vec::with_capacity(cols.len());
    for c in cols {
        let (name, value) = match c {
            LabelColumn::Dict { name, keys, values } => {
                if keys.is_null(row) {
                    continue;
                }
                (*name, values.value(keys.value(row) as usize))
            }
            LabelColumn::Plain { name, values } => {
                if values.is_null(row) {
                    continue;
                }
                (*name, values.value(row))
            }
        };
        if !value.is_empty() {
            labels.push(Label::new(name, value));
        }
    }
    // Columns are in label-name order, so this is sorted already.
    Labels::from_sorted(labels)
}

/// Decodes the rows of a batch of labels and samples into series,
/// keeping samples in `[start, end]` (only the newest with `latest_only`).
fn decode_series(batch: &RecordBatch, start: i64, end: i64, latest_only: bool, out: &mut Vec<Series>) -> Result<()> {
    let missing = |c: &str| Error::Invalid(format!("block batch lacks column {c}"));
    let cols = label_columns(batch)?;
    let ts = batch.column_by_name(COL_TIMESTAMPS).ok_or_else(|| missing(COL_TIMESTAMPS))?.as_list::<i32>();
    let scales = batch.column_by_name(COL_VALUE_SCALE).ok_or_else(|| missing(COL_VALUE_SCALE))?;
    let scales = scales.as_primitive::<Int8Type>();
    let ints = batch.column_by_name(COL_VALUES_INT).ok_or_else(|| missing(COL_VALUES_INT))?.as_list::<i32>();
    let floats = batch.column_by_name(COL_VALUES_FLOAT).ok_or_else(|| missing(COL_VALUES_FLOAT))?.as_list::<i32>();
    for row in 0..batch.num_rows() {
        let times = ts.value(row);
        let times: &Int64Array = times.as_primitive::<Int64Type>();
        let times = times.values();
        // Samples are sorted: binary-search the range.
        let lo = times.partition_point(|&t| t < start);
        let hi = times.partition_point(|&t| t <= end);
        if lo >= hi {
            continue;
        }
        let range = if latest_only { hi - 1..hi } else { lo..hi };
        let mut samples = Vec::with_capacity(range.len());
        if scales.is_null(row) {
            let vals = floats.value(row);
            let vals = vals.as_primitive::<Float64Type>().values();
            if vals.len() != times.len() {
                return Err(Error::Invalid(format!("row {row}: {} timestamps, {} values", times.len(), vals.len())));
            }
            samples.extend(range.map(|i| Sample::new(times[i], vals[i])));
        } else {
            let scale = scales.value(row);
            let m = *POW10
                .get(usize::try_from(scale).unwrap_or(usize::MAX))
                .ok_or_else(|| Error::Invalid(format!("row {row}: value scale {scale}")))?;
            let vals = ints.value(row);
            let vals = vals.as_primitive::<Int64Type>().values();
            if vals.len() != times.len() {
                return Err(Error::Invalid(format!("row {row}: {} timestamps, {} values", times.len(), vals.len())));
            }
            samples.extend(range.map(|i| Sample::new(times[i], vals[i] as f64 / m)));
        }
        out.push(Series { labels: row_labels(&cols, row), samples });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
