//! In-memory storage for test scripts.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cairn_common::push::MetricMetadata;
use cairn_common::status::ServiceError;
use cairn_common::storage::{LabelsRequest, Queryable, SelectRequest, Series};
use cairn_common::{Labels, Matcher, TenantId};
use parking_lot::RwLock;

/// Series kept sorted by labels; samples sorted by time.
#[derive(Debug, Default)]
pub struct MemStorage {
    series: RwLock<BTreeMap<Labels, Vec<cairn_common::Sample>>>,
}

fn matches(labels: &Labels, ms: &[Matcher]) -> bool {
    ms.iter().all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}

impl MemStorage {
    pub fn add(&self, s: Series) {
        let mut all = self.series.write();
        let e = all.entry(s.labels).or_default();
        e.extend(s.samples);
        // Stable sort, then keep the last write of each timestamp.
        e.sort_by_key(|x| x.t);
        let mut kept: Vec<cairn_common::Sample> = Vec::with_capacity(e.len());
        for x in e.drain(..) {
            match kept.last_mut() {
                Some(last) if last.t == x.t => *last = x,
                _ => kept.push(x),
            }
        }
        *e = kept;
    }

    pub fn clear(&self) {
        self.series.write().clear();
    }
}

#[async_trait]
impl Queryable for MemStorage {
    async fn select(&self, _: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
        if req.matchers.is_empty() {
            return Ok(Vec::new());
        }
        let all = self.series.read();
        Ok(all
            .iter()
            .filter(|(l, _)| matches(l, req.matchers))
            .filter_map(|(l, s)| {
                let samples: Vec<_> = s.iter().filter(|x| x.t >= req.start && x.t <= req.end).copied().collect();
                (!samples.is_empty()).then(|| Series { labels: l.clone(), samples })
            })
            .collect())
    }

    async fn series(&self, _: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError> {
        let all = self.series.read();
        Ok(all
            .keys()
            .filter(|l| req.matcher_sets.is_empty() || req.matcher_sets.iter().any(|m| matches(l, m)))
            .cloned()
            .collect())
    }

    async fn label_names(&self, t: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError> {
        let mut names: Vec<String> =
            self.series(t, req).await?.iter().flat_map(|l| l.iter().map(|x| x.name.clone())).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn label_values(
        &self,
        t: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError> {
        let mut v: Vec<String> =
            self.series(t, req).await?.iter().filter_map(|l| l.get(name).map(str::to_owned)).collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    async fn metadata(
        &self,
        _: &TenantId,
        _: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, ServiceError> {
        Ok(BTreeMap::new())
    }
}
