//! Label sets packed into one allocation, to keep head memory per series low.

use cairn_common::{Label, Labels};

/// A sorted label set stored as `len name len value ...` in one buffer
/// (lengths as LEB128 varints). One allocation instead of two per label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedLabels(Box<[u8]>);

impl PackedLabels {
    pub fn new(labels: &Labels) -> Self {
        let size: usize = labels.iter().map(|l| l.name.len() + l.value.len() + 4).sum();
        let mut buf = Vec::with_capacity(size);
        for l in labels {
            put(&mut buf, l.name.as_bytes());
            put(&mut buf, l.value.as_bytes());
        }
        Self(buf.into_boxed_slice())
    }

    /// Rebuilds from bytes written by [`PackedLabels::as_bytes`], checking them.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let p = Self(bytes.into());
        let mut prev: Option<&str> = None;
        for pair in p.pairs() {
            let (n, _) = pair?;
            if prev.is_some_and(|pn| pn >= n) {
                return None;
            }
            prev = Some(n);
        }
        Some(p)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Heap bytes held.
    pub fn heap_size(&self) -> usize {
        self.0.len()
    }

    /// Pairs as raw bytes in order; `None` marks malformed bytes (never
    /// produced by `new`).
    pub fn raw_pairs(&self) -> impl Iterator<Item = Option<(&[u8], &[u8])>> + Clone {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let pair = take(&mut rest).and_then(|n| take(&mut rest).map(|v| (n, v)));
            if pair.is_none() {
                rest = &[];
            }
            Some(pair)
        })
    }

    /// [`Labels`] order (pairwise by name, then value; a prefix first),
    /// without decoding either set.
    pub fn cmp_labels(&self, other: &PackedLabels) -> std::cmp::Ordering {
        self.raw_pairs().map_while(|p| p).cmp(other.raw_pairs().map_while(|p| p))
    }

    /// Pairs in order; `None` marks malformed bytes or invalid UTF-8.
    pub fn pairs(&self) -> impl Iterator<Item = Option<(&str, &str)>> {
        self.raw_pairs().map(|p| {
            let (n, v) = p?;
            Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?))
        })
    }

    pub fn to_labels(&self) -> Labels {
        Labels::from_sorted(self.pairs().map_while(|p| p).map(|(n, v)| Label::new(n, v)).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs().map_while(|p| p).find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Compares bytes only: the hot path of every append.
    pub fn equals(&self, labels: &Labels) -> bool {
        self.equals_pairs(labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())))
    }

    /// Whether this is the set of `pairs` (sorted, as in [`Labels`]).
    pub fn equals_pairs<'a>(&self, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
        let mut it = self.raw_pairs();
        for (name, value) in pairs {
            match it.next() {
                Some(Some((n, v))) if n == name && v == value => {}
                _ => return false,
            }
        }
        it.next().is_none()
    }
}

fn put(buf: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
    buf.extend_from_slice(s);
}

fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut n = 0usize;
    let mut shift = 0;
    loop {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        n |= usize::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    if rest.len() < n {
        return None;
    }
    let (s, tail) = rest.split_at(n);
    *rest = tail;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_compares() {
        let long = "x".repeat(300);
        let l = Labels::from_pairs([("__name__", "up"), ("job", "node"), ("big", long.as_str())]);
        let p = PackedLabels::new(&l);
        assert_eq!(p.to_labels(), l);
        assert!(p.equals(&l));
        assert_eq!(p.get("job"), Some("node"));
        assert_eq!(p.get("nope"), None);
        assert!(!p.equals(&Labels::from_pairs([("__name__", "up")])));
        assert_eq!(PackedLabels::from_bytes(p.as_bytes()), Some(p));
        assert_eq!(PackedLabels::from_bytes(&[5, b'a']), None);
    }

    #[test]
    fn packed_sets_sort_as_label_sets_do() {
        let sets = [
            Labels::from_pairs([("__name__", "up")]),
            Labels::from_pairs([("__name__", "up"), ("job", "a")]),
            Labels::from_pairs([("__name__", "up"), ("job", "b")]),
            Labels::from_pairs([("__name__", "up"), ("jobs", "a")]),
            Labels::from_pairs([("__name__", "upper")]),
            Labels::from_pairs([("a", "z".repeat(200).as_str())]),
            Labels::from_pairs([("a", "\u{e9}")]),
            Labels::default(),
        ];
        for a in &sets {
            for b in &sets {
                assert_eq!(PackedLabels::new(a).cmp_labels(&PackedLabels::new(b)), a.cmp(b), "{a} against {b}");
            }
        }
    }
}
