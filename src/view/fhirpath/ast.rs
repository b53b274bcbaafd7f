//! FHIRPath syntax tree.

use super::function::Function;

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Empty,
    Boolean(bool),
    Integer(i64),
    /// As written, to keep its precision.
    Decimal(String),
    String(String),
    Date(String),
    DateTime(String),
    Time(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Implies,
    Or,
    Xor,
    And,
    In,
    Contains,
    Eq,
    Equiv,
    Ne,
    NotEquiv,
    Lt,
    Gt,
    Le,
    Ge,
    Union,
    Is,
    As,
    Add,
    Sub,
    Concat,
    Mul,
    Div,
    IntDiv,
    Mod,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// The focus (`$this`, or the implicit start of a path).
    This,
    /// `$index` inside `where`/`select`.
    IndexVar,
    /// `%name`; resolved to a literal when a view is compiled.
    Constant(String),
    /// `%rowIndex`: the index of the current forEach/repeat item.
    RowIndex,
    Literal(Literal),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    /// A function call, resolved when parsed.
    Call(Box<Expr>, Function, Vec<Expr>),
    Negate(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// The right side of `is`/`as`, and a function's type argument.
    TypeName(String),
}

impl Expr {
    /// Replaces `%name` by the view's constants; `%rowIndex` is special.
    pub fn resolve_constants(
        self,
        lookup: &dyn Fn(&str) -> Option<Literal>,
    ) -> Result<Expr, String> {
        let r = |e: Box<Expr>| e.resolve_constants(lookup).map(Box::new);
        Ok(match self {
            Expr::Constant(name) if name == "rowIndex" => Expr::RowIndex,
            Expr::Constant(name) => {
                Expr::Literal(lookup(&name).ok_or_else(|| format!("undefined constant %{name}"))?)
            }
            Expr::Member(e, n) => Expr::Member(r(e)?, n),
            Expr::Index(e, i) => Expr::Index(r(e)?, r(i)?),
            Expr::Call(e, n, args) => Expr::Call(
                r(e)?,
                n,
                args.into_iter()
                    .map(|a| a.resolve_constants(lookup))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Negate(e) => Expr::Negate(r(e)?),
            Expr::Binary(op, a, b) => Expr::Binary(op, r(a)?, r(b)?),
            other => other,
        })
    }
}
