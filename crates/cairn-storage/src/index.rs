//! The per-tenant bucket index: the list of blocks (and deletion marks), so
//! that queries never list the bucket.
//!
//! Consistency under concurrent writers comes from generations written
//! create-if-absent: the index is a series of objects
//! `<tenant>/bucket-index/<generation>.json`; a writer reads the newest
//! generation N and writes N+1 only if it does not exist yet (`If-None-Match`
//! on S3, a hard link on a local filesystem). A writer that loses the race
//! reads the winner's generation and applies its change on top. Readers
//! find the newest generation by listing once, then by asking for the next
//! generation by name. Old generations are deleted behind the newest.

use std::sync::Arc;

use cairn_common::TenantId;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::meta::{BlockMeta, DeletionMark};
use crate::{Result, paths};

/// The bucket index format this build writes and reads up to.
pub const INDEX_VERSION: u32 = 1;

/// Generations kept behind the newest, for readers that are a bit behind.
const KEEP_GENERATIONS: u64 = 8;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketIndex {
    pub version: u32,
    pub generation: u64,
    pub updated_at: i64,
    pub blocks: Vec<BlockMeta>,
    pub deletion_marks: Vec<DeletionMark>,
}

impl BucketIndex {
    /// Blocks overlapping `[start, end]` and not marked for deletion.
    pub fn live_overlapping(&self, start: i64, end: i64) -> impl Iterator<Item = &BlockMeta> {
        self.blocks.iter().filter(move |b| b.overlaps(start, end) && !self.deletion_marks.iter().any(|m| m.id == b.id))
    }

    pub fn contains(&self, id: Ulid) -> bool {
        self.blocks.iter().any(|b| b.id == id)
    }

    /// Reads an index of any version this build knows. A newer one is
    /// refused, so that this build neither misreads it nor writes an older
    /// generation over it.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let idx: BucketIndex = serde_json::from_slice(bytes)?;
        if idx.version > INDEX_VERSION {
            return Err(crate::Error::Invalid(format!(
                "bucket index generation {} has format version {}, newer than this build reads ({INDEX_VERSION})",
                idx.generation, idx.version
            )));
        }
        Ok(idx)
    }
}

async fn read_generation(store: &dyn ObjectStore, tenant: &TenantId, g: u64) -> Result<Option<BucketIndex>> {
    match store.get(&paths::index(tenant, g)).await {
        Ok(r) => Ok(Some(BucketIndex::parse(&r.bytes().await?)?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every generation in the bucket, by listing.
async fn generations(store: &dyn ObjectStore, tenant: &TenantId) -> Result<Vec<u64>> {
    let objects: Vec<_> = store.list(Some(&paths::index_dir(tenant))).try_collect().await?;
    Ok(objects.iter().filter_map(|o| paths::index_generation(&o.location)).collect())
}

/// The newest generation by listing.
async fn newest_by_listing(store: &dyn ObjectStore, tenant: &TenantId) -> Result<u64> {
    Ok(generations(store, tenant).await?.into_iter().max().unwrap_or(0))
}

/// Reads the newest index at or after generation `from` (0 = list to find
/// it). Returns an empty index of generation 0 when there is none.
pub async fn read_latest(store: &dyn ObjectStore, tenant: &TenantId, from: u64) -> Result<BucketIndex> {
    let mut g = if from == 0 { newest_by_listing(store, tenant).await? } else { from };
    let mut current = None;
    while g > 0 {
        if let Some(idx) = read_generation(store, tenant, g).await? {
            current = Some(idx);
            break;
        }
        // Trimmed behind us (writers delete old generations): find the
        // newest again, as often as it takes on a busy bucket. Returning
        // an empty index here would let a writer restart the generations.
        g = newest_by_listing(store, tenant).await?;
    }
    // Newer generations written since: follow them by name.
    while let Some(next) = read_generation(store, tenant, g + 1).await? {
        g += 1;
        current = Some(next);
    }
    Ok(current.unwrap_or(BucketIndex { version: INDEX_VERSION, ..Default::default() }))
}

/// Attempts of [`update`] before it gives up on a bucket that keeps
/// changing under it.
const MAX_ATTEMPTS: usize = 100;

/// Applies `change` to the newest index and writes it as the next
/// generation, retrying on conflict with a concurrent writer. Returns the
/// newest index, which holds the change.
///
/// `change` must be idempotent (add a block only if absent, and so on):
/// after writing, the newest index is checked by applying `change` again.
/// A writer slower than [`KEEP_GENERATIONS`] others can read generation N,
/// and then create N+1 after the others trimmed it: the create succeeds,
/// but the newest generation is far ahead and lacks the change. The check
/// finds that, and the change is applied again on top of the newest.
pub async fn update(
    store: &Arc<dyn ObjectStore>,
    tenant: &TenantId,
    known: u64,
    mut change: impl FnMut(&mut BucketIndex),
) -> Result<BucketIndex> {
    let mut from = known;
    for _ in 0..MAX_ATTEMPTS {
        let mut idx = read_latest(store.as_ref(), tenant, from).await?;
        change(&mut idx);
        idx.version = INDEX_VERSION;
        idx.generation += 1;
        idx.updated_at = cairn_common::time::now_ms();
        let body = PutPayload::from(serde_json::to_vec(&idx)?);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match store.put_opts(&paths::index(tenant, idx.generation), body, opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                from = idx.generation;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        // Only the newest generation, found by listing, counts.
        let listed = generations(store.as_ref(), tenant).await?;
        let newest = listed.iter().copied().max().unwrap_or(0);
        trim(store.as_ref(), tenant, &listed, newest).await;
        if newest <= idx.generation {
            return Ok(idx);
        }
        let latest = read_latest(store.as_ref(), tenant, newest).await?;
        let mut again = latest.clone();
        change(&mut again);
        if again.blocks == latest.blocks && again.deletion_marks == latest.deletion_marks {
            // Later writers built on this one.
            return Ok(latest);
        }
        from = latest.generation;
    }
    Err(crate::Error::Unavailable(format!(
        "the bucket index of tenant {tenant} changed under every one of {MAX_ATTEMPTS} attempts to update it"
    )))
}

/// Deletes generations more than [`KEEP_GENERATIONS`] behind `newest`
/// (best effort: a failed delete only leaves an old object).
async fn trim(store: &dyn ObjectStore, tenant: &TenantId, listed: &[u64], newest: u64) {
    for &g in listed {
        if g.saturating_add(KEEP_GENERATIONS) < newest {
            let _ = store.delete(&paths::index(tenant, g)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    const GOLDEN_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/bucket-index-v1.json");

    fn golden() -> BucketIndex {
        let mut marked = crate::meta::test_meta(2, 2_000);
        marked.tenant = "team-a".into();
        BucketIndex {
            version: 1,
            generation: 7,
            updated_at: 1_700_000_000_000,
            blocks: vec![crate::meta::test_meta(1, 1_000), marked],
            deletion_marks: vec![DeletionMark {
                id: Ulid(2),
                deletion_time: 1_700_000_000_500,
                reason: "retention".into(),
            }],
        }
    }

    #[test]
    #[ignore = "writes testdata; run once per index format version"]
    fn write_golden_index() {
        std::fs::write(GOLDEN_V1, serde_json::to_vec_pretty(&golden()).expect("json")).expect("write");
    }

    /// Every later build reads version 1 as it was written, and refuses
    /// versions newer than its own.
    #[test]
    fn every_index_version_is_read_and_newer_ones_refused() {
        let bytes = std::fs::read(GOLDEN_V1).expect("testdata/bucket-index-v1.json is checked in");
        assert_eq!(BucketIndex::parse(&bytes).expect("v1"), golden());
        let mut newer: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        newer["version"] = serde_json::json!(INDEX_VERSION + 1);
        let e = BucketIndex::parse(&serde_json::to_vec(&newer).expect("json")).expect_err("newer");
        assert!(e.to_string().contains("newer than this build reads"), "{e}");
    }

    use super::*;
    use crate::meta::test_meta;
    use object_store::local::LocalFileSystem;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_lose_no_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let tenant = TenantId::new("t").expect("tenant");
        let mut tasks = Vec::new();
        for w in 0..8u128 {
            let (store, tenant) = (store.clone(), tenant.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..5u128 {
                    update(&store, &tenant, 0, |idx| add(idx, w * 100 + i)).await.expect("update");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let idx = read_latest(store.as_ref(), &tenant, 0).await.expect("read");
        assert_eq!(idx.blocks.len(), 40, "every writer's every entry is there");
        assert!(idx.generation >= 40, "generation {}", idx.generation);
        // Old generations were trimmed.
        let left: Vec<_> = store.list(Some(&paths::index_dir(&tenant))).try_collect().await.expect("list");
        assert!(left.len() <= KEEP_GENERATIONS as usize + 1, "{} generations kept", left.len());
        // A reader that knew an old generation catches up.
        let newest = idx.generation;
        let idx = read_latest(store.as_ref(), &tenant, newest - 7).await.expect("read");
        assert_eq!(idx.generation, newest);
    }

    fn add(idx: &mut BucketIndex, id: u128) {
        if !idx.contains(Ulid(id)) {
            idx.blocks.push(test_meta(id, 10));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::disallowed_methods, reason = "the test stalls one writer on purpose")]
    async fn a_writer_slower_than_the_trimming_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let tenant = TenantId::new("t").expect("tenant");
        let mut stalled = false;
        let idx = update(&store, &tenant, 0, |idx| {
            if !stalled {
                stalled = true;
                // While this writer holds generation 0 in hand, others write
                // ten generations and trim the one it is about to create.
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async {
                        for i in 0..10 {
                            update(&store, &tenant, 0, |idx| add(idx, 100 + i)).await.expect("update");
                        }
                    })
                });
            }
            add(idx, 1);
        })
        .await
        .expect("update");
        assert!(idx.contains(Ulid(1)), "the slow writer's change is in the index it returns");
        let newest = read_latest(store.as_ref(), &tenant, 0).await.expect("read");
        assert_eq!(newest.blocks.len(), 11, "{:?}", newest.blocks.iter().map(|b| b.id).collect::<Vec<_>>());
        assert!(newest.generation > 10);
    }
}
