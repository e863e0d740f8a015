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

/// What opened a level: its closing token ends it.
#[derive(Default, Clone, Copy, PartialEq)]
enum Opener {
    #[default]
    Root,
    /// `(`, closed by `)`.
    Paren,
    /// `[`, closed by `]` (array literals and subscripts).
    Bracket,
    /// `CASE`, closed by `END`: its arms are expressions of their own,
    /// nested one level below the expression the `CASE` stands in.
    Case,
}

/// One level of nesting: operators of the current expression, the deepest
/// level nested in it, and the deepest expression finished so far.
#[derive(Default)]
struct Level {
    opener: Opener,
    ops: usize,
    child: usize,
    best: usize,
}

impl Level {
    fn new(opener: Opener) -> Self {
        Self { opener, ..Self::default() }
    }

    fn end_expression(&mut self) {
        self.best = self.best.max(self.ops + self.child);
        self.ops = 0;
        self.child = 0;
    }
}

/// Closes the innermost level if `opener` opened it (a stray closer is
/// left to the parser), counting it as one level below its parent.
fn close(levels: &mut Vec<Level>, opener: Opener) {
    if levels.len() > 1 && levels.last().is_some_and(|l| l.opener == opener) {
        pop(levels);
    }
}

fn pop(levels: &mut Vec<Level>) {
    if let Some(mut done) = levels.pop() {
        done.end_expression();
        if let Some(parent) = levels.last_mut() {
            parent.child = parent.child.max(1 + done.best);
        }
    }
}

/// An upper bound on expression depth in `tokens`.
pub fn depth_bound(tokens: &[Token]) -> usize {
    let mut levels = vec![Level::new(Opener::Root)];
    for t in tokens {
        match t {
            Token::LParen => levels.push(Level::new(Opener::Paren)),
            Token::RParen => close(&mut levels, Opener::Paren),
            Token::LBracket => levels.push(Level::new(Opener::Bracket)),
            Token::RBracket => close(&mut levels, Opener::Bracket),
            Token::Comma | Token::SemiColon => {
                if let Some(l) = levels.last_mut() {
                    l.end_expression();
                }
            }
            Token::Word(w) => match w.keyword {
                Keyword::CASE => {
                    // The CASE is an operand of the expression around it.
                    if let Some(l) = levels.last_mut() {
                        l.ops += 1;
                    }
                    levels.push(Level::new(Opener::Case));
                }
                Keyword::END => close(&mut levels, Opener::Case),
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
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE => {
                    if let Some(l) = levels.last_mut() {
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
                    if let Some(l) = levels.last_mut() {
                        l.ops += 1;
                    }
                }
                _ => {}
            },
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
        pop(&mut levels);
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
    fn case_arms_and_brackets_do_not_break_a_chain() {
        let case_chain = vec!["a = 1 OR CASE WHEN b THEN 1 ELSE 0 END = 1"; 1500].join(" OR ");
        assert!(depth(&format!("SELECT * FROM t WHERE {case_chain}")) >= 1500);
        let nested: String = "CASE WHEN a THEN ".repeat(700) + "1" + &" END".repeat(700);
        assert!(depth(&format!("SELECT {nested}")) >= 700);
        let bracket_chain = vec!["x[1, 2] = 1"; 1500].join(" OR ");
        assert!(depth(&format!("SELECT * FROM t WHERE {bracket_chain}")) >= 1500);
        let list: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
        assert!(depth(&format!("SELECT [{}]", list.join(", "))) < 10);
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
