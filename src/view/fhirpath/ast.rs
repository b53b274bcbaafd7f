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

impl Expr {
    /// The members of the focus (`$this`) the expression reads, when it
    /// reads the focus only through them: on a value that holds none of
    /// them, it gives what it gives on an empty object. `None` when it
    /// reads the focus as a whole (`$this`, `exists()`, `Patient.name`,
    /// which compares the resource's type). Function arguments are
    /// evaluated on the items of their base (or on nothing), never on the
    /// focus, so only the base is looked at.
    pub fn focus_members(&self) -> Option<Vec<&str>> {
        let mut names = Vec::new();
        self.collect_focus_members(&mut names).then_some(names)
    }

    fn collect_focus_members<'e>(&'e self, names: &mut Vec<&'e str>) -> bool {
        match self {
            Expr::This => false,
            Expr::Member(base, name) if **base == Expr::This => {
                let is_type_name = name.starts_with(|c: char| c.is_ascii_uppercase());
                names.push(name);
                !is_type_name
            }
            Expr::Member(base, _) | Expr::Negate(base) | Expr::Call(base, _, _) => {
                base.collect_focus_members(names)
            }
            Expr::Index(a, b) | Expr::Binary(_, a, b) => {
                a.collect_focus_members(names) && b.collect_focus_members(names)
            }
            Expr::IndexVar
            | Expr::Constant(_)
            | Expr::RowIndex
            | Expr::Literal(_)
            | Expr::TypeName(_) => true,
        }
    }
}
