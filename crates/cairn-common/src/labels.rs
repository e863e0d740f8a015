//! Label sets: the identity of a series.

use std::fmt;

/// The label that holds a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// One `name="value"` pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: String,
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), value: value.into() }
    }
}

/// A label set, always sorted by name with unique names and no empty values.
///
/// Ordering is Prometheus's: pairwise by name, then value; a prefix sorts first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Builds a label set from pairs in any order. Empty values are dropped (a
    /// label with an empty value is the same as no label); for duplicate names
    /// the last one wins. Validation of untrusted input happens before this.
    pub fn new(mut labels: Vec<Label>) -> Self {
        normalize_by(&mut labels, |l| (l.name.as_bytes(), l.value.as_bytes()));
        Self(labels)
    }

    /// Wraps labels the caller guarantees to be sorted, unique and non-empty.
    pub fn from_sorted(labels: Vec<Label>) -> Self {
        debug_assert!(labels.windows(2).all(|w| w[0].name < w[1].name), "labels not sorted");
        Self(labels)
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::new(pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name)).ok().map(|i| self.0[i].value.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// Sets `name` to `value`, or removes it when `value` is empty.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => value.clone_into(&mut self.0[i].value),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, Label::new(name, value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            self.0.remove(i);
        }
    }

    /// Keeps only the labels whose names `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Label) -> bool) {
        self.0.retain(|l| keep(l));
    }

    /// Prometheus's label-set hash (XXH64 over `name 0xff value 0xff ...`),
    /// which some PromQL functions (`limit_ratio`) expose in their results.
    pub fn prometheus_hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        self.feed(|b| h.update(b));
        h.digest()
    }

    /// A stable 64-bit hash of the whole set (XXH3, for lookups).
    pub fn hash64(&self) -> u64 {
        hash_pairs(self.0.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())))
    }

    /// The bytes both hashes read: `name 0xff value 0xff ...`.
    fn feed(&self, mut update: impl FnMut(&[u8])) {
        for l in &self.0 {
            update(l.name.as_bytes());
            update(&[0xff]);
            update(l.value.as_bytes());
            update(&[0xff]);
        }
    }
}

/// Puts label-like items in [`Labels`] order: empty values dropped, sorted
/// by name, the last of equal names kept. Used for borrowed pairs too, so
/// that a set read straight from a request is the set [`Labels::new`] makes.
/// (UTF-8 sorts as its bytes do.)
pub fn normalize_by<T>(labels: &mut Vec<T>, pair: impl Fn(&T) -> (&[u8], &[u8])) {
    labels.retain(|l| !pair(l).1.is_empty());
    // Stable: of equal names the last stays last, and `dedup_by` keeps it.
    labels.sort_by(|a, b| pair(a).0.cmp(pair(b).0));
    labels.dedup_by(|later, earlier| {
        if pair(later).0 == pair(earlier).0 {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
}

/// [`Labels::hash64`] of sorted, unique pairs, without building the set:
/// XXH3 over `name 0xff value 0xff ...`, gathered into one reused buffer
/// per thread and hashed in one call (the streaming hasher costs several
/// times as much on label-sized pieces).
pub fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    with_scratch(|buf| {
        for (n, v) in pairs {
            buf.extend_from_slice(n);
            buf.push(0xff);
            buf.extend_from_slice(v);
            buf.push(0xff);
        }
        xxhash_rust::xxh3::xxh3_64(buf)
    })
}

/// Runs `f` on an empty buffer kept by this thread (a fresh one if the
/// thread's is in use).
pub fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// Larger buffers are not kept: one odd series must not pin memory.
    const KEEP: usize = 64 << 10;
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = f(&mut buf);
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

impl fmt::Display for Labels {
    /// Prometheus's notation: `name{a="1", b="2"}`, or `{a="1"}` without a name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        if let Some(n) = name {
            f.write_str(n)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| name.is_none() || l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use xxhash_rust::xxh3::Xxh3;

    use super::*;

    #[test]
    fn new_sorts_dedups_and_drops_empty() {
        let l =
            Labels::new(vec![Label::new("b", "2"), Label::new("a", "1"), Label::new("c", ""), Label::new("b", "3")]);
        assert_eq!(l.to_string(), r#"{a="1", b="3"}"#);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn display_and_order_follow_prometheus() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        assert_eq!(a.to_string(), r#"up{job="x"}"#);
        let b = Labels::from_pairs([("__name__", "up")]);
        assert!(b < a, "a prefix sorts first");
    }

    #[test]
    fn set_and_remove() {
        let mut l = Labels::from_pairs([("a", "1")]);
        l.set("c", "3");
        l.set("b", "2");
        l.set("a", "");
        assert_eq!(l.to_string(), r#"{b="2", c="3"}"#);
        l.remove("b");
        assert_eq!(l.hash64(), Labels::from_pairs([("c", "3")]).hash64());
    }

    #[test]
    fn hash64_is_xxh3_of_the_stream_it_always_hashed() {
        // Shard keys and lookups depend on this value staying the same.
        let l = Labels::from_pairs([("__name__", "up"), ("job", "node"), ("instance", "a:9100")]);
        let mut h = Xxh3::new();
        l.feed(|b| h.update(b));
        assert_eq!(l.hash64(), h.digest());
        assert_eq!(l.hash64(), hash_pairs(l.iter().map(|x| (x.name.as_bytes(), x.value.as_bytes()))));
        let long = Labels::from_pairs([("v", "x".repeat(100_000).as_str())]);
        let mut h = Xxh3::new();
        long.feed(|b| h.update(b));
        assert_eq!(long.hash64(), h.digest());
    }

    #[test]
    fn normalize_by_matches_labels_new_on_pairs() {
        let mut pairs = vec![("b", "2"), ("a", "1"), ("c", ""), ("b", "3"), ("a", "0")];
        normalize_by(&mut pairs, |p| (p.0.as_bytes(), p.1.as_bytes()));
        let owned = Labels::new(vec![
            Label::new("b", "2"),
            Label::new("a", "1"),
            Label::new("c", ""),
            Label::new("b", "3"),
            Label::new("a", "0"),
        ]);
        let want: Vec<(&str, &str)> = owned.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(pairs, want);
        assert_eq!(pairs, vec![("a", "0"), ("b", "3")]);
    }
}
