//! FHIRPath text → AST, once per path (never per row).
//!
//! Precedence, lowest first, as in the FHIRPath grammar: implies; or xor; and;
//! in contains; = ~ != !~; < > <= >=; |; is as; + - &; * / div mod; unary + -;
//! then invocation (`.name`, `.fn()`) and indexing (`[i]`).

use super::ast::{BinOp, Expr, Literal};
use super::function::Function;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("FHIRPath {path:?}: {message} (at character {at})")]
pub struct ParseError {
    pub path: String,
    pub at: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    DateTime(String),
    Const(String),
    Var(String),
    Op(&'static str),
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, (usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let tok = if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c == '`' {
            i += 1;
            let s = i;
            while i < chars.len() && chars[i] != '`' {
                i += 1;
            }
            if i >= chars.len() {
                return Err((start, "unterminated `identifier`".into()));
            }
            i += 1;
            Tok::Ident(chars[s..i - 1].iter().collect())
        } else if c == '\'' {
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return Err((start, "unterminated string".into())),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = *chars
                            .get(i + 1)
                            .ok_or((i, "unterminated escape".to_string()))?;
                        i += 2;
                        match e {
                            'n' => s.push('\n'),
                            't' => s.push('\t'),
                            'r' => s.push('\r'),
                            'f' => s.push('\u{c}'),
                            'u' => {
                                let hex: String = chars
                                    .get(i..i + 4)
                                    .ok_or((i, "short \\u".to_string()))?
                                    .iter()
                                    .collect();
                                let code = u32::from_str_radix(&hex, 16)
                                    .map_err(|_| (i, "bad \\u".to_string()))?;
                                s.push(char::from_u32(code).ok_or((i, "bad \\u".to_string()))?);
                                i += 4;
                            }
                            other => s.push(other),
                        }
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            Tok::Str(s)
        } else if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            Tok::Num(chars[start..i].iter().collect())
        } else if c == '@' {
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || matches!(chars[i], '-' | ':' | '.' | '+' | 'T' | 'Z'))
            {
                i += 1;
            }
            Tok::DateTime(chars[start + 1..i].iter().collect())
        } else if c == '%' || c == '$' {
            i += 1;
            let name: String = if chars.get(i) == Some(&'`') {
                i += 1;
                let s = i;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                i += 1;
                chars[s..i.saturating_sub(1)].iter().collect()
            } else {
                let s = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                chars[s..i].iter().collect()
            };
            if name.is_empty() {
                return Err((start, format!("{c} must be followed by a name")));
            }
            if c == '%' {
                Tok::Const(name)
            } else {
                Tok::Var(name)
            }
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = ["<=", ">=", "!=", "!~"].into_iter().find(|o| *o == two);
            if let Some(op) = op {
                i += 2;
                Tok::Op(op)
            } else {
                i += 1;
                Tok::Op(match c {
                    '.' => ".",
                    '(' => "(",
                    ')' => ")",
                    '[' => "[",
                    ']' => "]",
                    ',' => ",",
                    '=' => "=",
                    '~' => "~",
                    '<' => "<",
                    '>' => ">",
                    '|' => "|",
                    '+' => "+",
                    '-' => "-",
                    '*' => "*",
                    '/' => "/",
                    '&' => "&",
                    '{' => "{",
                    '}' => "}",
                    other => return Err((start, format!("unexpected character {other:?}"))),
                })
            }
        };
        out.push((start, tok));
    }
    Ok(out)
}

pub fn parse(path: &str) -> Result<Expr, ParseError> {
    let fail = |at: usize, message: String| ParseError {
        path: path.to_owned(),
        at,
        message,
    };
    let tokens = lex(path).map_err(|(at, m)| fail(at, m))?;
    let mut p = Parser {
        tokens,
        pos: 0,
        end: path.len(),
    };
    let expr = p.expr(0).map_err(|(at, m)| fail(at, m))?;
    if p.pos < p.tokens.len() {
        return Err(fail(
            p.tokens[p.pos].0,
            format!("unexpected {:?}", p.tokens[p.pos].1),
        ));
    }
    Ok(expr)
}

type PResult<T> = Result<T, (usize, String)>;

struct Parser {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
    /// Where the text ends: the position of an error past the last token.
    end: usize,
}

/// Binary operators by precedence level, lowest first.
const LEVELS: &[&[(&str, BinOp)]] = &[
    &[("implies", BinOp::Implies)],
    &[("or", BinOp::Or), ("xor", BinOp::Xor)],
    &[("and", BinOp::And)],
    &[("in", BinOp::In), ("contains", BinOp::Contains)],
    &[
        ("=", BinOp::Eq),
        ("~", BinOp::Equiv),
        ("!=", BinOp::Ne),
        ("!~", BinOp::NotEquiv),
    ],
    &[
        ("<", BinOp::Lt),
        (">", BinOp::Gt),
        ("<=", BinOp::Le),
        (">=", BinOp::Ge),
    ],
    &[("|", BinOp::Union)],
    &[("is", BinOp::Is), ("as", BinOp::As)],
    &[("+", BinOp::Add), ("-", BinOp::Sub), ("&", BinOp::Concat)],
    &[
        ("*", BinOp::Mul),
        ("/", BinOp::Div),
        ("div", BinOp::IntDiv),
        ("mod", BinOp::Mod),
    ],
];

impl Parser {
    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.0)
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.1)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> PResult<()> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err((self.at(), format!("expected {op:?}")))
        }
    }

    fn binary_op_at(&self, level: usize) -> Option<BinOp> {
        let tok = self.peek()?;
        LEVELS[level].iter().find_map(|(text, op)| match tok {
            Tok::Op(o) if o == text => Some(*op),
            Tok::Ident(word) if word == text => Some(*op),
            _ => None,
        })
    }

    fn expr(&mut self, level: usize) -> PResult<Expr> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.expr(level + 1)?;
        while let Some(op) = self.binary_op_at(level) {
            self.pos += 1;
            let right = if matches!(op, BinOp::Is | BinOp::As) {
                self.type_name()?
            } else {
                self.expr(level + 1)?
            };
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn type_name(&mut self) -> PResult<Expr> {
        match self.peek().cloned() {
            Some(Tok::Ident(mut name)) => {
                self.pos += 1;
                while self.eat_op(".") {
                    match self.peek().cloned() {
                        Some(Tok::Ident(part)) => {
                            self.pos += 1;
                            name = part; // FHIR.Patient / System.String: keep the type name
                        }
                        _ => return Err((self.at(), "expected a type name".into())),
                    }
                }
                Ok(Expr::TypeName(name))
            }
            _ => Err((self.at(), "expected a type name".into())),
        }
    }

    fn unary(&mut self) -> PResult<Expr> {
        if self.eat_op("-") {
            let inner = self.unary()?;
            return Ok(Expr::Negate(Box::new(inner)));
        }
        if self.eat_op("+") {
            return self.unary();
        }
        self.postfix()
    }

    fn postfix(&mut self) -> PResult<Expr> {
        let mut expr = self.term()?;
        loop {
            if self.eat_op(".") {
                let at = self.at();
                let Some(Tok::Ident(name)) = self.peek().cloned() else {
                    return Err((at, "expected a name after '.'".into()));
                };
                self.pos += 1;
                expr = if self.eat_op("(") {
                    let args = self.args()?;
                    let function = Function::resolve(&name, args.len()).map_err(|m| (at, m))?;
                    Expr::Call(Box::new(expr), function, args)
                } else {
                    Expr::Member(Box::new(expr), name)
                };
            } else if self.eat_op("[") {
                let index = self.expr(0)?;
                self.expect_op("]")?;
                expr = Expr::Index(Box::new(expr), Box::new(index));
            } else {
                return Ok(expr);
            }
        }
    }

    fn args(&mut self) -> PResult<Vec<Expr>> {
        let mut args = Vec::new();
        if self.eat_op(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr(0)?);
            if self.eat_op(")") {
                return Ok(args);
            }
            self.expect_op(",")?;
        }
    }

    fn term(&mut self) -> PResult<Expr> {
        let at = self.at();
        let tok = self
            .peek()
            .cloned()
            .ok_or((at, "unexpected end of expression".to_string()))?;
        self.pos += 1;
        Ok(match tok {
            Tok::Str(s) => Expr::Literal(Literal::String(s)),
            Tok::Num(n) => {
                if n.contains('.') {
                    Expr::Literal(Literal::Decimal(n))
                } else {
                    Expr::Literal(Literal::Integer(
                        n.parse()
                            .map_err(|_| (at, "integer out of range".to_string()))?,
                    ))
                }
            }
            Tok::DateTime(text) => {
                if let Some(time) = text.strip_prefix('T') {
                    Expr::Literal(Literal::Time(time.to_owned()))
                } else if text.contains('T') {
                    Expr::Literal(Literal::DateTime(text))
                } else {
                    Expr::Literal(Literal::Date(text))
                }
            }
            Tok::Const(name) => Expr::Constant(name),
            Tok::Var(name) => match name.as_str() {
                "this" => Expr::This,
                "index" => Expr::IndexVar,
                "total" => Expr::Literal(Literal::Empty),
                _ => return Err((at, format!("unknown variable ${name}"))),
            },
            Tok::Ident(name) => match name.as_str() {
                "true" => Expr::Literal(Literal::Boolean(true)),
                "false" => Expr::Literal(Literal::Boolean(false)),
                _ => {
                    if self.eat_op("(") {
                        let args = self.args()?;
                        let function = Function::resolve(&name, args.len()).map_err(|m| (at, m))?;
                        Expr::Call(Box::new(Expr::This), function, args)
                    } else {
                        Expr::Member(Box::new(Expr::This), name)
                    }
                }
            },
            Tok::Op("(") => {
                let inner = self.expr(0)?;
                self.expect_op(")")?;
                inner
            }
            Tok::Op("{") => {
                self.expect_op("}")?;
                Expr::Literal(Literal::Empty)
            }
            Tok::Op(op) => return Err((at, format!("unexpected {op:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_past_the_last_token_points_at_the_end() {
        let err = parse("name.given.foo(").unwrap_err();
        assert_eq!(err.at, "name.given.foo(".len());
        assert!(err.to_string().ends_with("(at character 15)"), "{err}");
    }

    #[test]
    fn parses_precedence_and_invocations() {
        let e = parse("name.where(use = 'official' and family = 'f1').exists()").unwrap();
        assert!(matches!(e, Expr::Call(_, Function::Exists, _)));
        let e = parse("a = 1 or b < 2").unwrap();
        assert!(matches!(e, Expr::Binary(BinOp::Or, _, _)));
        assert!(parse("name[%i].family").is_ok());
        assert!(parse("value.ofType(Quantity).value < %v").is_ok());
        assert!(parse("name.").is_err());
        assert!(parse("name where").is_err());
    }

    #[test]
    fn random_token_soup_never_panics() {
        let tokens = [
            "name", ".", "where(", ")", "(", "[", "]", "0", "1.5", "'x'", "'", "%c", "$this",
            "and", "or", "=", "!=", "<=", "|", "+", "-", "*", "/", "is", "as", "Patient", "`a b`",
            "@2020-01", "{", "}", ",", "first()", "ofType(", "//c\n", "~", "&", "\\", "%", "$",
        ];
        let text = r#"{"resourceType":"Patient","id":"p","name":[{"family":"f","given":["a","b"]}],"active":true,"x":1.5}"#;
        let arena = bumpalo::Bump::new();
        let patient = crate::view::Json::parse(text, &arena).unwrap();
        let mut state = 42u64;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(state % 9) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(tokens[((state >> 33) % tokens.len() as u64) as usize]);
            }
            state = state.wrapping_add(1);
            // Whatever parses must also evaluate (to a value or an error) without panicking.
            if let Ok(expr) = parse(&text) {
                let focus = [super::super::Item::Node {
                    json: &patient,
                    ty: None,
                }];
                let _ = super::super::evaluate(&expr, &focus, 0);
            }
        }
    }
}
