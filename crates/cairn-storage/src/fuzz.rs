//! Entry point for coverage-guided fuzzing of the block reader
//! (`tests/fuzz`); the corpus is replayed as an ordinary test. Whatever
//! the bytes of a block file, reading it returns (an error, mostly): no
//! panic, no unbounded memory.

use std::sync::Arc;

use cairn_common::{MatchOp, Matcher};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::block::BlockReader;

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
}

/// The bytes of a block's `data.parquet`, opened and queried as a query
/// would: selects by metric name and regex, series, label values.
///
/// The Parquet decoder panics on some malformed files; the block reader
/// turns that into a corrupt-block error, which is its contract. The
/// fuzzer's panic hook would abort on the caught panic, so a quiet hook
/// stands in while the reader runs; a panic that escapes the reader still
/// ends the run as a crash.
pub fn block_file(data: &[u8]) {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    read_block(data);
    std::panic::set_hook(hook);
}

fn read_block(data: &[u8]) {
    RUNTIME.with(|rt| {
        let Some(rt) = rt else { return };
        rt.block_on(async {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let path = object_store::path::Path::from("t/block/data.parquet");
            if store.put(&path, bytes::Bytes::copy_from_slice(data).into()).await.is_err() {
                return;
            }
            let Ok(reader) = BlockReader::open(store, path, data.len() as u64, Arc::new(|_| {})).await else {
                return;
            };
            let sets = [
                Matcher::new(MatchOp::Equal, "__name__", "up").ok(),
                Matcher::new(MatchOp::Regex, "__name__", ".+").ok(),
                Matcher::new(MatchOp::NotEqual, "job", "").ok(),
            ];
            for m in sets.into_iter().flatten() {
                let ms = [m];
                let _ = reader.select(&ms, i64::MIN, i64::MAX, false, None).await;
                let _ = reader.select(&ms, 0, 1_000_000, true, None).await;
                let _ = reader.series(&ms, i64::MIN, i64::MAX).await;
                let _ = reader.label_values("job", &ms, i64::MIN, i64::MAX).await;
            }
        });
    });
}
