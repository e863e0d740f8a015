//! Retention: blocks older than the retention period are first marked for
//! deletion, then deleted once every reader has had time to see the mark.
//!
//! ```text
//!  block.max_time < now - retention
//!    1. put <block>/deletion-mark.json, add the mark to the bucket index
//!       (queriers stop choosing the block at their next index refresh)
//!  mark older than the deletion delay
//!    2. delete data.parquet, meta.json, then the mark
//!    3. drop the block and its mark from the bucket index
//! ```
//!
//! A query that chose the block before the mark keeps reading it: the
//! delay (at least the index refresh interval plus the longest query) is
//! what keeps it from finding a half-deleted block. Every step is
//! idempotent, so a crash between steps is finished by the next run.

use std::sync::Arc;
use std::time::Duration;

use cairn_common::service::{BoxError, Service};
use cairn_common::{Shutdown, TenantId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tracing::{info, warn};

use crate::index::{self, BucketIndex};
use crate::meta::DeletionMark;
use crate::store::BlockStore;
use crate::{Error, Result, paths};

#[derive(Clone, Copy, Debug)]
pub struct RetentionPolicy {
    /// Blocks whose newest sample is older than this are removed; 0 keeps
    /// everything.
    pub retention_ms: i64,
    /// Time between a block's deletion mark and its deletion.
    pub deletion_delay_ms: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionStats {
    pub marked: usize,
    pub deleted: usize,
}

/// Tenants with data in the bucket (one LIST of the top level; retention
/// runs in the background, never on the query path).
pub async fn tenants(bucket: &dyn ObjectStore) -> Result<Vec<TenantId>> {
    let listing = bucket.list_with_delimiter(None).await?;
    Ok(listing.common_prefixes.iter().filter_map(|p| TenantId::new(p.as_ref()).ok()).collect())
}

/// Applies the policy to one tenant at time `now_ms`. Returns the index it
/// wrote, if it changed anything.
pub async fn enforce(
    bucket: &Arc<dyn ObjectStore>,
    tenant: &TenantId,
    policy: RetentionPolicy,
    now_ms: i64,
) -> Result<(RetentionStats, Option<BucketIndex>)> {
    let mut stats = RetentionStats::default();
    let mut written = None;
    if policy.retention_ms <= 0 {
        return Ok((stats, written));
    }
    let idx = index::read_latest(bucket.as_ref(), tenant, 0).await?;
    let cutoff = now_ms - policy.retention_ms;

    // 1. Mark.
    let mut marks = Vec::new();
    for b in idx.blocks.iter().filter(|b| b.max_time < cutoff) {
        if idx.deletion_marks.iter().any(|m| m.id == b.id) {
            continue;
        }
        let mark = DeletionMark { id: b.id, deletion_time: now_ms, reason: "retention".into() };
        bucket.put(&paths::deletion_mark(tenant, b.id), serde_json::to_vec(&mark)?.into()).await?;
        marks.push(mark);
    }
    if !marks.is_empty() {
        stats.marked = marks.len();
        let new = index::update(bucket, tenant, idx.generation, |idx| {
            for m in &marks {
                if !idx.deletion_marks.iter().any(|x| x.id == m.id) && idx.contains(m.id) {
                    idx.deletion_marks.push(m.clone());
                }
            }
        })
        .await?;
        info!(tenant = %tenant, blocks = marks.len(), "marked blocks past retention for deletion");
        written = Some(new);
    }

    // 2. Delete what was marked long enough ago.
    let idx = written.clone().unwrap_or(idx);
    let due: Vec<DeletionMark> =
        idx.deletion_marks.iter().filter(|m| m.deletion_time + policy.deletion_delay_ms <= now_ms).cloned().collect();
    let mut deleted = Vec::new();
    for m in &due {
        let mut ok = true;
        for p in [paths::data(tenant, m.id), paths::meta(tenant, m.id), paths::deletion_mark(tenant, m.id)] {
            if let Err(e) = delete_if_present(bucket.as_ref(), &p).await {
                warn!(tenant = %tenant, block = %m.id, error = %e, "deleting a block failed; retried next run");
                ok = false;
                break;
            }
        }
        if ok {
            deleted.push(m.id);
        }
    }

    // 3. Forget them.
    if !deleted.is_empty() {
        stats.deleted = deleted.len();
        let new = index::update(bucket, tenant, idx.generation, |idx| {
            idx.blocks.retain(|b| !deleted.contains(&b.id));
            idx.deletion_marks.retain(|m| !deleted.contains(&m.id));
        })
        .await?;
        info!(tenant = %tenant, blocks = deleted.len(), "deleted blocks past retention");
        written = Some(new);
    }
    Ok((stats, written))
}

async fn delete_if_present(bucket: &dyn ObjectStore, p: &Path) -> Result<()> {
    match bucket.delete(p).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Applies a retention policy to every tenant's blocks in the background,
/// telling the block store of each index it writes. One per bucket (in
/// `cairn all`, the only process using it).
pub struct RetentionService {
    bucket: Arc<dyn ObjectStore>,
    blocks: BlockStore,
    policy: RetentionPolicy,
}

impl RetentionService {
    pub fn new(bucket: Arc<dyn ObjectStore>, blocks: BlockStore, policy: RetentionPolicy) -> Self {
        Self { bucket, blocks, policy }
    }

    /// Runs every tenant once; returns the first error after trying all.
    pub async fn enforce_all(&self) -> Result<()> {
        let now = cairn_common::time::now_ms();
        let mut first = None;
        for tenant in tenants(self.bucket.as_ref()).await? {
            // A panic on one tenant's blocks fails that tenant only.
            let enforced =
                cairn_common::task::catch_panic_async(enforce(&self.bucket, &tenant, self.policy, now)).await;
            match enforced {
                Ok(Ok((_, Some(index)))) => self.blocks.notify(&tenant, index),
                Ok(Ok((_, None))) => {}
                Ok(Err(e)) => {
                    warn!(tenant = %tenant, error = %e, "applying retention failed; retried next run");
                    first.get_or_insert(e);
                }
                Err(panic) => {
                    tracing::error!(tenant = %tenant, error = %panic, "applying retention panicked; retried next run");
                    first.get_or_insert(Error::Invalid(format!("retention panicked for tenant {tenant}: {panic}")));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[async_trait::async_trait]
impl Service for RetentionService {
    fn name(&self) -> &'static str {
        "retention"
    }

    async fn run(&self, shutdown: Shutdown) -> std::result::Result<(), BoxError> {
        if self.policy.retention_ms <= 0 {
            shutdown.cancelled().await;
            return Ok(());
        }
        // Often enough that deletion follows its delay closely, rarely
        // enough that the top-level LIST costs nothing.
        let every = Duration::from_millis((self.policy.deletion_delay_ms / 4).clamp(1_000, 5 * 60_000) as u64);
        loop {
            let _ = self.enforce_all().await;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::local::LocalFileSystem;
    use ulid::Ulid;

    use super::*;
    use crate::meta::test_meta as meta;

    async fn objects(bucket: &dyn ObjectStore, tenant: &TenantId) -> Vec<String> {
        let prefix = Path::from(format!("{tenant}/blocks"));
        let mut all: Vec<String> =
            bucket.list(Some(&prefix)).map_ok(|o| o.location.to_string()).try_collect().await.expect("list");
        all.sort();
        all
    }

    #[tokio::test]
    async fn marks_then_deletes_only_expired_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let tenant = TenantId::new("t").expect("tenant");
        for (id, max) in [(1, 1_000), (2, 5_000), (3, 9_000)] {
            bucket.put(&paths::data(&tenant, Ulid(id)), "x".into()).await.expect("put");
            bucket.put(&paths::meta(&tenant, Ulid(id)), "{}".into()).await.expect("put");
            index::update(&bucket, &tenant, 0, |idx| idx.blocks.push(meta(id, max))).await.expect("index");
        }
        assert_eq!(tenants(bucket.as_ref()).await.expect("tenants"), vec![tenant.clone()]);
        let policy = RetentionPolicy { retention_ms: 4_000, deletion_delay_ms: 500 };

        // At 8000 the cutoff is 4000: block 1 expires and is marked, not deleted.
        let (stats, idx) = enforce(&bucket, &tenant, policy, 8_000).await.expect("enforce");
        assert_eq!(stats, RetentionStats { marked: 1, deleted: 0 });
        let idx = idx.expect("index written");
        assert_eq!(idx.live_overlapping(0, 10_000).map(|b| b.id).collect::<Vec<_>>(), vec![Ulid(2), Ulid(3)]);
        assert_eq!(objects(bucket.as_ref(), &tenant).await.len(), 7, "files stay while the mark is young");

        // Running again before the delay changes nothing.
        let (stats, idx) = enforce(&bucket, &tenant, policy, 8_400).await.expect("enforce");
        assert_eq!((stats, idx), (RetentionStats::default(), None));

        // After the delay, block 1 is gone; at 9500 block 2 is marked too.
        let (stats, _) = enforce(&bucket, &tenant, policy, 9_500).await.expect("enforce");
        assert_eq!(stats, RetentionStats { marked: 1, deleted: 1 });
        let idx = index::read_latest(bucket.as_ref(), &tenant, 0).await.expect("read");
        assert_eq!(idx.blocks.iter().map(|b| b.id).collect::<Vec<_>>(), vec![Ulid(2), Ulid(3)]);
        assert_eq!(idx.deletion_marks.len(), 1);
        let left = objects(bucket.as_ref(), &tenant).await;
        assert!(left.iter().all(|p| !p.contains(&Ulid(1).to_string())), "{left:?}");

        // No retention: nothing happens.
        let keep = RetentionPolicy { retention_ms: 0, deletion_delay_ms: 0 };
        assert_eq!(enforce(&bucket, &tenant, keep, i64::MAX / 2).await.expect("enforce").0, RetentionStats::default());
    }
}
