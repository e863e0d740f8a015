//! Label matchers: `=`, `!=`, `=~`, `!~`.

use std::fmt;

use regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// A matcher on one label. Regular expressions are fully anchored, as in
/// Prometheus, and `.` matches newlines.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
    /// For regexes that are plain alternations of literals (`a|b|c`), the
    /// literals, so that the index can look them up instead of scanning.
    set: Option<Vec<String>>,
}

impl Matcher {
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self, regex::Error> {
        let name = name.into();
        let value = value.into();
        let (re, set) = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                let re = Regex::new(&format!("^(?s:{value})$"))?;
                (Some(re), literal_alternation(&value))
            }
            _ => (None, None),
        };
        Ok(Self { name, op, value, re, set })
    }

    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), op: MatchOp::Equal, value: value.into(), re: None, set: None }
    }

    /// Whether a label value (empty when the label is absent) matches.
    #[inline]
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => self.value == v,
            MatchOp::NotEqual => self.value != v,
            MatchOp::Regex => self.regex_matches(v),
            MatchOp::NotRegex => !self.regex_matches(v),
        }
    }

    fn regex_matches(&self, v: &str) -> bool {
        if let Some(set) = &self.set {
            return set.iter().any(|s| s == v);
        }
        self.re.as_ref().is_some_and(|re| re.is_match(v))
    }

    /// The exact values this matcher accepts, when it accepts a known finite
    /// set of non-empty values (`=` and literal alternations).
    pub fn exact_values(&self) -> Option<Vec<&str>> {
        match self.op {
            MatchOp::Equal if !self.value.is_empty() => Some(vec![self.value.as_str()]),
            MatchOp::Regex => {
                let set = self.set.as_ref()?;
                if set.iter().any(|s| s.is_empty()) {
                    return None;
                }
                Some(set.iter().map(String::as_str).collect())
            }
            _ => None,
        }
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// `a|b|c` where every branch is a plain literal, returned as the literals.
fn literal_alternation(re: &str) -> Option<Vec<String>> {
    const META: &[char] = &['\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '^', '$'];
    if re.contains(META) {
        return None;
    }
    Some(re.split('|').map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_anchored_and_dotall() {
        let m = Matcher::new(MatchOp::Regex, "a", "fo.").expect("valid");
        assert!(m.matches("foo"));
        assert!(!m.matches("xfoo"));
        assert!(!m.matches("fooo"));
        assert!(m.matches("fo\n"));
        let n = Matcher::new(MatchOp::NotRegex, "a", "").expect("valid");
        assert!(!n.matches(""));
        assert!(n.matches("x"));
    }

    #[test]
    fn literal_alternations_use_a_set() {
        let m = Matcher::new(MatchOp::Regex, "job", "api|db").expect("valid");
        assert_eq!(m.exact_values(), Some(vec!["api", "db"]));
        assert!(m.matches("db"));
        assert!(!m.matches("api|db"));
        let e = Matcher::new(MatchOp::Regex, "job", "api|").expect("valid");
        assert_eq!(e.exact_values(), None, "matches the empty value too");
        assert!(e.matches(""));
    }

    #[test]
    fn invalid_regex_is_an_error() {
        assert!(Matcher::new(MatchOp::Regex, "a", "(").is_err());
    }
}
