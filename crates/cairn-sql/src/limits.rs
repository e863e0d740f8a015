//! Limits on SQL text, checked before anything recursive runs.
//!
//! SQL's parser bounds nesting, but not chains: `a OR b OR c ...` parses in
//! a loop into a tree as deep as the chain, which the planner, the
//! optimizer and even dropping the plan then walk by recursion. One pass
//! over the tokens (sqlparser's tokenizer does not recurse) bounds the depth
//! of every expression: per parenthesis level, the operators since the last
//! separator (a comma or a clause keyword), plus the deepest level nested
//! inside. Like the PromQL scan, it may over-count, never under-count.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The default depth limit. On the [`crate::SQL_STACK_BYTES`] stacks SQL
/// runs on, chains of 8,000 operators plan without trouble in a debug
/// build; what the limit bounds first is planning time, which grows with
/// the square of a chain (1,000 operators plan in about a second).
pub const DEFAULT_MAX_DEPTH: usize = 1000;
/// The default length limit: 256 KiB.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;

/// Checks `sql` against the limits; the error names the flag to raise.
pub fn check(sql: &str, max_bytes: usize, max_depth: usize) -> Result<(), String> {
    if max_bytes > 0 && sql.len() > max_bytes {
        return Err(format!(
            "the query is {} bytes long, more than the limit of {max_bytes} (raise --sql.max-query-bytes)",
            sql.len()
        ));
    }
    if max_depth > 0 {
        // Malformed text is left to the parser, which reports it properly.
        let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return Ok(()) };
        let depth = depth_bound(&tokens);
        if depth > max_depth {
            return Err(format!(
                "the query nests expressions up to {depth} levels deep (parentheses, chained operators), more than the limit of {max_depth} (raise --sql.max-expression-depth)"
            ));
        }
    }
    Ok(())
}

/// One parenthesis level: operators of the current expression, the deepest
/// level nested in it, and the deepest expression finished so far.
#[derive(Default)]
struct Level {
    ops: usize,
    child: usize,
    best: usize,
}

impl Level {
    fn end_expression(&mut self) {
        self.best = self.best.max(self.ops + self.child);
        self.ops = 0;
        self.child = 0;
    }
}

/// An upper bound on expression depth in `tokens`.
pub fn depth_bound(tokens: &[Token]) -> usize {
    let mut levels = vec![Level::default()];
    for t in tokens {
        match t {
            Token::LParen => levels.push(Level::default()),
            Token::RParen => {
                if levels.len() > 1
                    && let Some(mut done) = levels.pop()
                {
                    done.end_expression();
                    if let Some(parent) = levels.last_mut() {
                        parent.child = parent.child.max(1 + done.best);
                    }
                }
            }
            Token::Comma | Token::SemiColon => {
                if let Some(l) = levels.last_mut() {
                    l.end_expression();
                }
            }
            Token::Word(w) => {
                let l = levels.last_mut();
                match w.keyword {
                    // Clause keywords and CASE arms start a new expression.
                    Keyword::SELECT
                    | Keyword::FROM
                    | Keyword::WHERE
                    | Keyword::GROUP
                    | Keyword::HAVING
                    | Keyword::ORDER
                    | Keyword::LIMIT
                    | Keyword::OFFSET
                    | Keyword::UNION
                    | Keyword::EXCEPT
                    | Keyword::INTERSECT
                    | Keyword::JOIN
                    | Keyword::ON
                    | Keyword::WITH
                    | Keyword::CASE
                    | Keyword::WHEN
                    | Keyword::THEN
                    | Keyword::ELSE
                    | Keyword::END => {
                        if let Some(l) = l {
                            l.end_expression();
                        }
                    }
                    Keyword::AND
                    | Keyword::OR
                    | Keyword::NOT
                    | Keyword::IS
                    | Keyword::LIKE
                    | Keyword::ILIKE
                    | Keyword::SIMILAR
                    | Keyword::BETWEEN
                    | Keyword::IN
                    | Keyword::AT
                    | Keyword::COLLATE
                    | Keyword::DIV => {
                        if let Some(l) = l {
                            l.ops += 1;
                        }
                    }
                    _ => {}
                }
            }
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::Period
            | Token::EOF => {}
            // Every other symbol may be an operator.
            _ => {
                if let Some(l) = levels.last_mut() {
                    l.ops += 1;
                }
            }
        }
    }
    while levels.len() > 1 {
        if let Some(mut done) = levels.pop() {
            done.end_expression();
            if let Some(parent) = levels.last_mut() {
                parent.child = parent.child.max(1 + done.best);
            }
        }
    }
    levels.last_mut().map_or(0, |root| {
        root.end_expression();
        1 + root.best
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(sql: &str) -> usize {
        depth_bound(&Tokenizer::new(&GenericDialect {}, sql).tokenize().expect("tokens"))
    }

    #[test]
    fn chains_and_nesting_count_flat_lists_do_not() {
        let ors: Vec<String> = (0..3000).map(|i| format!("value = {i}")).collect();
        assert!(depth(&format!("SELECT * FROM samples WHERE {}", ors.join(" OR "))) >= 3000);
        assert!(depth(&format!("SELECT {}1{}", "(".repeat(600), ")".repeat(600))) >= 600);
        let list: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
        assert!(depth(&format!("SELECT * FROM samples WHERE value IN ({})", list.join(", "))) < 10);
        let cols: Vec<String> = (0..500).map(|i| format!("value + {i} AS c{i}")).collect();
        assert!(depth(&format!("SELECT {} FROM samples", cols.join(", "))) < 10);
        assert!(depth("SELECT CASE WHEN a > 1 THEN 'x' WHEN a > 2 THEN 'y' ELSE 'z' END FROM t") < 10);
        assert!(depth("SELECT metric, avg(value) FROM samples WHERE metric = 'up' GROUP BY metric") < 10);
    }

    #[test]
    fn limits_name_their_flags() {
        let ors = vec!["a = 1"; 1000].join(" OR ");
        let e = check(&format!("SELECT * FROM t WHERE {ors}"), 0, 500).expect_err("deep");
        assert!(e.contains("--sql.max-expression-depth"), "{e}");
        let e = check(&ors, 100, 0).expect_err("long");
        assert!(e.contains("--sql.max-query-bytes"), "{e}");
        check("SELECT 1", 100, 500).expect("fine");
    }
}
