//! The inverted index: for each label name and value, the sorted list of
//! series refs that carry it.

use std::collections::HashMap;

use cairn_common::Matcher;

/// Sorted, de-duplicated series refs.
pub type Postings = Vec<u32>;

#[derive(Debug, Default)]
pub struct Index {
    /// name -> value -> refs. Refs are appended in increasing order because
    /// they are allocated monotonically, so lists stay sorted for free.
    by_label: HashMap<Box<str>, HashMap<Box<str>, Postings>>,
    /// Every live ref, sorted.
    all: Postings,
}

impl Index {
    pub fn add<'a>(&mut self, series_ref: u32, labels: impl Iterator<Item = (&'a str, &'a str)>) {
        push_sorted(&mut self.all, series_ref);
        for (n, v) in labels {
            let values = match self.by_label.get_mut(n) {
                Some(values) => values,
                None => self.by_label.entry(n.into()).or_default(),
            };
            match values.get_mut(v) {
                Some(list) => push_sorted(list, series_ref),
                None => {
                    values.insert(v.into(), vec![series_ref]);
                }
            }
        }
    }

    pub fn all(&self) -> &[u32] {
        &self.all
    }

    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.by_label.keys().map(|k| &**k)
    }

    /// Values of `name` with their postings.
    pub fn values(&self, name: &str) -> impl Iterator<Item = (&str, &Postings)> {
        self.by_label.get(name).into_iter().flat_map(|m| m.iter().map(|(v, p)| (&**v, p)))
    }

    pub fn postings(&self, name: &str, value: &str) -> &[u32] {
        self.by_label.get(name).and_then(|m| m.get(value)).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Refs of series matching all `matchers`, sorted.
    ///
    /// As in Prometheus, matchers that accept the empty value also match
    /// series without the label, so they are applied by subtraction: first
    /// intersect the matchers that require a non-empty value, then remove
    /// what the others exclude. A selector of only "may be empty" matchers
    /// starts from all series.
    pub fn select(&self, matchers: &[Matcher]) -> Postings {
        let mut include: Vec<Postings> = Vec::new();
        let mut exclude: Vec<Postings> = Vec::new();
        for m in matchers {
            if m.matches("") {
                // Matches series without the label; subtract the values it rejects.
                exclude.push(self.union_where(&m.name, |v| !m.matches(v)));
            } else if let Some(values) = m.exact_values() {
                include.push(union(values.iter().map(|v| self.postings(&m.name, v))));
            } else {
                include.push(self.union_where(&m.name, |v| m.matches(v)));
            }
        }
        include.sort_by_key(Vec::len);
        let mut result = match include.split_first() {
            Some((first, rest)) => rest.iter().fold(first.clone(), |acc, p| intersect(&acc, p)),
            None if matchers.is_empty() => return Vec::new(),
            None => self.all.clone(),
        };
        for ex in &exclude {
            if result.is_empty() {
                break;
            }
            result = subtract(&result, ex);
        }
        result
    }

    fn union_where(&self, name: &str, mut keep: impl FnMut(&str) -> bool) -> Postings {
        union(self.values(name).filter(|(v, _)| keep(v)).map(|(_, p)| p.as_slice()))
    }

    /// Approximate heap bytes held by the index.
    pub fn heap_size(&self) -> usize {
        let mut n = self.all.capacity() * 4;
        for (name, values) in &self.by_label {
            n += name.len() + values.capacity() * (size_of::<Box<str>>() + size_of::<Postings>() + 8);
            for (v, p) in values {
                n += v.len() + p.capacity() * 4;
            }
        }
        n
    }
}

fn push_sorted(list: &mut Postings, r: u32) {
    match list.last() {
        Some(&last) if last >= r => {
            if let Err(i) = list.binary_search(&r) {
                list.insert(i, r);
            }
        }
        _ => list.push(r),
    }
}

pub fn intersect(a: &[u32], b: &[u32]) -> Postings {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

pub fn subtract(a: &[u32], b: &[u32]) -> Postings {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

pub fn union<'a>(lists: impl Iterator<Item = &'a [u32]>) -> Postings {
    let mut out: Postings = Vec::new();
    let mut n = 0;
    for l in lists {
        out.extend_from_slice(l);
        n += 1;
    }
    if n > 1 {
        out.sort_unstable();
        out.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::MatchOp;

    fn index() -> Index {
        let mut ix = Index::default();
        ix.add(0, [("__name__", "up"), ("job", "api")].into_iter());
        ix.add(1, [("__name__", "up"), ("job", "db")].into_iter());
        ix.add(2, [("__name__", "up")].into_iter());
        ix.add(3, [("__name__", "down"), ("job", "api")].into_iter());
        ix
    }

    fn m(op: MatchOp, n: &str, v: &str) -> Matcher {
        Matcher::new(op, n, v).expect("valid matcher")
    }

    #[test]
    fn matchers_follow_prometheus_semantics() {
        let ix = index();
        assert_eq!(ix.select(&[m(MatchOp::Equal, "__name__", "up")]), vec![0, 1, 2]);
        assert_eq!(ix.select(&[m(MatchOp::Equal, "__name__", "up"), m(MatchOp::Equal, "job", "api")]), vec![0]);
        // `!=` keeps series without the label.
        assert_eq!(ix.select(&[m(MatchOp::Equal, "__name__", "up"), m(MatchOp::NotEqual, "job", "api")]), vec![1, 2]);
        // `=""` selects series without the label.
        assert_eq!(ix.select(&[m(MatchOp::Equal, "job", "")]), vec![2]);
        // `!=""` requires the label.
        assert_eq!(ix.select(&[m(MatchOp::NotEqual, "job", "")]), vec![0, 1, 3]);
        assert_eq!(ix.select(&[m(MatchOp::Regex, "job", "a.*")]), vec![0, 3]);
        assert_eq!(ix.select(&[m(MatchOp::Regex, "job", "api|db")]), vec![0, 1, 3]);
        assert_eq!(ix.select(&[m(MatchOp::Regex, "job", "api|")]), vec![0, 2, 3]);
        assert_eq!(ix.select(&[m(MatchOp::NotRegex, "job", "a.*")]), vec![1, 2]);
        assert_eq!(ix.select(&[m(MatchOp::Regex, "__name__", ".*")]), vec![0, 1, 2, 3]);
        assert_eq!(ix.select(&[m(MatchOp::Equal, "__name__", "nope")]), Vec::<u32>::new());
        assert_eq!(ix.select(&[]), Vec::<u32>::new());
    }

    #[test]
    fn set_operations() {
        assert_eq!(intersect(&[1, 3, 5, 7], &[3, 4, 5]), vec![3, 5]);
        assert_eq!(subtract(&[1, 3, 5, 7], &[3, 4, 5]), vec![1, 7]);
        assert_eq!(union([&[1, 5][..], &[3, 5][..]].into_iter()), vec![1, 3, 5]);
    }
}
