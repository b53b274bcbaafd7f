//! Evaluating a FHIRPath AST on a JSON resource. Every expression yields a
//! collection of [`Item`]s; items borrow from the resource, so navigation
//! copies nothing.

use std::borrow::Cow;

use super::ast::{BinOp, Expr, Literal};
use super::boundary;
use super::function::Function;
use super::item::{Item, Scalar, is_type};
use crate::view::json::Json;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

type Coll<'a> = Vec<Item<'a>>;
type R<T> = Result<T, EvalError>;

fn err<T>(message: impl Into<String>) -> R<T> {
    Err(EvalError(message.into()))
}

/// Evaluation context: the resource (for `getResourceKey` at the root) and
/// the current forEach/repeat index (`%rowIndex`).
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub row_index: i64,
}

/// Evaluates `expr` with `focus` as `$this`.
pub fn evaluate<'a>(expr: &Expr, focus: &[Item<'a>], row_index: i64) -> R<Coll<'a>> {
    eval(expr, focus, Ctx { row_index }, None)
}

/// Boolean value of a collection in a boolean context: empty → None,
/// a single boolean → it, any other single item → true, more → error.
pub fn singleton_bool(items: &[Item<'_>]) -> R<Option<bool>> {
    match items {
        [] => Ok(None),
        [item] => Ok(Some(match item.scalar() {
            Scalar::Bool(b) => b,
            _ => true,
        })),
        _ => err(format!(
            "expected a single boolean, got {} items",
            items.len()
        )),
    }
}

/// The items `name` selects on `item` (choice elements typed by their suffix).
pub(super) fn member<'a>(item: &Item<'a>, name: &str, out: &mut impl Extend<Item<'a>>) {
    member_each(item, name, &mut |child| {
        out.extend(Some(child));
        true
    });
}

/// [`member`], handing each item to `each` in order until it returns false.
pub(super) fn member_each<'a>(
    item: &Item<'a>,
    name: &str,
    each: &mut impl FnMut(Item<'a>) -> bool,
) {
    let Item::Node {
        json: json @ Json::Object(members),
        ..
    } = item
    else {
        return;
    };
    // A path may start with the resource type: `Patient.name`.
    if name.starts_with(|c: char| c.is_ascii_uppercase())
        && json.get("resourceType").and_then(Json::as_str) == Some(name)
    {
        each(item.clone());
        return;
    }
    /// Each non-null item of `value` (array items one by one); false once
    /// `each` said stop.
    fn push<'a>(
        value: &'a Json<'a>,
        ty: Option<&'a str>,
        each: &mut impl FnMut(Item<'a>) -> bool,
    ) -> bool {
        match value {
            Json::Array(items) => items
                .iter()
                .filter(|j| **j != Json::Null)
                .all(|json| each(Item::Node { json, ty })),
            Json::Null => true,
            json => each(Item::Node { json, ty }),
        }
    }
    // Choice element: `value` matches `valueQuantity`, typed Quantity. One
    // pass finds an exact member or notes that a choice may follow.
    let is_choice = |key: &str| is_choice_member(key, name);
    let mut choice_at = None;
    for (at, (key, value)) in members.iter().enumerate() {
        if *key == name {
            push(value, None, each);
            return;
        }
        if choice_at.is_none() && is_choice(key) {
            choice_at = Some(at);
        }
    }
    let Some(first) = choice_at else { return };
    for (key, value) in &members[first..] {
        if is_choice(key) && !push(value, Some(&key[name.len()..]), each) {
            return;
        }
    }
}

/// Whether member `key` is a choice member of `name` (`valueQuantity` of
/// `value`). The byte after the prefix is checked first, so most keys fail
/// with no string comparison.
pub fn is_choice_member(key: &str, name: &str) -> bool {
    key.as_bytes()
        .get(name.len())
        .is_some_and(u8::is_ascii_uppercase)
        && key.starts_with(name)
}

fn eval<'a>(expr: &Expr, focus: &[Item<'a>], ctx: Ctx, index: Option<i64>) -> R<Coll<'a>> {
    match expr {
        Expr::This => Ok(focus.to_vec()),
        Expr::IndexVar => Ok(index.map(Item::Int).into_iter().collect()),
        Expr::RowIndex => Ok(vec![Item::Int(ctx.row_index)]),
        Expr::Constant(name) => err(format!("unresolved constant %{name}")),
        Expr::TypeName(name) => err(format!("type name {name} used as a value")),
        Expr::Literal(lit) => Ok(literal(lit)),
        Expr::Member(base, name) => {
            let mut out = Vec::new();
            // Most paths start at the focus: walk it in place, no copy.
            if **base == Expr::This {
                for item in focus {
                    member(item, name, &mut out);
                }
            } else {
                for item in &eval(base, focus, ctx, index)? {
                    member(item, name, &mut out);
                }
            }
            Ok(out)
        }
        Expr::Index(base, i) => {
            let base = eval(base, focus, ctx, index)?;
            let i = eval(i, focus, ctx, index)?;
            match i.as_slice() {
                [] => Ok(vec![]),
                [Item::Int(n)] if *n >= 0 => {
                    Ok(base.get(*n as usize).cloned().into_iter().collect())
                }
                [Item::Int(_)] => Ok(vec![]),
                _ => err("an indexer must be a single integer"),
            }
        }
        Expr::Negate(inner) => {
            let v = eval(inner, focus, ctx, index)?;
            match v.as_slice() {
                [] => Ok(vec![]),
                [Item::Int(i)] => Ok(vec![Item::Int(-i)]),
                [item] => match item.scalar() {
                    Scalar::Num(n) => Ok(vec![decimal(-n)]),
                    _ => err("unary minus needs a number"),
                },
                _ => err("unary minus needs a single value"),
            }
        }
        Expr::Binary(op, a, b) => binary(*op, a, b, focus, ctx, index),
        Expr::Call(base, function, args) => {
            let base = eval(base, focus, ctx, index)?;
            call(*function, base, args, ctx)
        }
    }
}

fn literal<'a>(lit: &Literal) -> Coll<'a> {
    match lit {
        Literal::Empty => vec![],
        Literal::Boolean(b) => vec![Item::Bool(*b)],
        Literal::Integer(i) => vec![Item::Int(*i)],
        Literal::Decimal(d) => vec![Item::Dec(Cow::Owned(d.clone()))],
        Literal::String(s) => vec![Item::Str(Cow::Owned(s.clone()))],
        Literal::Date(s) => vec![Item::Date(Cow::Owned(s.clone()))],
        Literal::DateTime(s) => vec![Item::DateTime(Cow::Owned(s.clone()))],
        Literal::Time(s) => vec![Item::Time(Cow::Owned(s.clone()))],
    }
}

fn decimal<'a>(n: f64) -> Item<'a> {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        Item::Dec(Cow::Owned(format!("{n:.1}")))
    } else {
        Item::Dec(Cow::Owned(n.to_string()))
    }
}

/// `item = 'text'` for a single item.
pub(super) fn equals_text(item: &Item<'_>, text: &str) -> bool {
    item.scalar() == Scalar::Str(text)
}

fn items_equal(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (a.scalar(), b.scalar()) {
        (Scalar::Other, Scalar::Other) => match (a, b) {
            (Item::Node { json: x, .. }, Item::Node { json: y, .. }) => x == y,
            _ => false,
        },
        (x, y) => x == y,
    }
}

fn collections_equal(a: &[Item<'_>], b: &[Item<'_>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| items_equal(x, y))
}

fn binary<'a>(
    op: BinOp,
    a: &Expr,
    b: &Expr,
    focus: &[Item<'a>],
    ctx: Ctx,
    index: Option<i64>,
) -> R<Coll<'a>> {
    if matches!(op, BinOp::Is | BinOp::As) {
        let Expr::TypeName(ty) = b else {
            return err("is/as need a type name");
        };
        let left = eval(a, focus, ctx, index)?;
        return Ok(match (op, left.as_slice()) {
            (_, []) => vec![],
            (BinOp::Is, [item]) => vec![Item::Bool(is_type(item, ty))],
            (BinOp::As, [item]) => {
                if is_type(item, ty) {
                    vec![item.clone()]
                } else {
                    vec![]
                }
            }
            _ => return err("is/as need a single value"),
        });
    }
    // `x = 'literal'` (as in where(system = '...')) is the common case:
    // compare in place instead of materialising the literal per item.
    if let (BinOp::Eq | BinOp::Ne, Expr::Literal(Literal::String(wanted))) = (op, b) {
        let left = eval(a, focus, ctx, index)?;
        let equal = match left.as_slice() {
            [] => return Ok(vec![]),
            [item] => equals_text(item, wanted),
            _ => false,
        };
        return Ok(vec![Item::Bool(equal == (op == BinOp::Eq))]);
    }
    let left = eval(a, focus, ctx, index)?;
    // `and`, `or` and `implies` stop at a left side that decides them, as
    // the reference (HAPI) engine does: the right side is not evaluated.
    let decided = match (op, singleton_bool(&left)) {
        (BinOp::And, Ok(Some(false))) => Some(false),
        (BinOp::Or, Ok(Some(true))) | (BinOp::Implies, Ok(Some(false))) => Some(true),
        _ => None,
    };
    if let Some(decided) = decided {
        return Ok(vec![Item::Bool(decided)]);
    }
    let right = eval(b, focus, ctx, index)?;
    let logic = |v: &Coll<'a>| singleton_bool(v);
    let out = |b: Option<bool>| b.map(Item::Bool).into_iter().collect::<Coll<'a>>();
    Ok(match op {
        BinOp::And => out(match (logic(&left)?, logic(&right)?) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        }),
        BinOp::Or => out(match (logic(&left)?, logic(&right)?) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        }),
        BinOp::Xor => out(match (logic(&left)?, logic(&right)?) {
            (Some(x), Some(y)) => Some(x != y),
            _ => None,
        }),
        BinOp::Implies => out(match (logic(&left)?, logic(&right)?) {
            (Some(false), _) | (_, Some(true)) => Some(true),
            (Some(true), Some(false)) => Some(false),
            _ => None,
        }),
        BinOp::Eq | BinOp::Equiv | BinOp::Ne | BinOp::NotEquiv => {
            if (left.is_empty() || right.is_empty()) && matches!(op, BinOp::Eq | BinOp::Ne) {
                return Ok(vec![]);
            }
            let equal = collections_equal(&left, &right);
            vec![Item::Bool(if matches!(op, BinOp::Eq | BinOp::Equiv) {
                equal
            } else {
                !equal
            })]
        }
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            match (left.as_slice(), right.as_slice()) {
                ([], _) | (_, []) => vec![],
                ([x], [y]) => {
                    let ordering = match (x.scalar(), y.scalar()) {
                        (Scalar::Num(p), Scalar::Num(q)) => p.partial_cmp(&q),
                        (Scalar::Str(p), Scalar::Str(q)) => Some(p.cmp(q)),
                        _ => return err("cannot compare these values"),
                    };
                    let Some(o) = ordering else { return Ok(vec![]) };
                    vec![Item::Bool(match op {
                        BinOp::Lt => o.is_lt(),
                        BinOp::Gt => o.is_gt(),
                        BinOp::Le => o.is_le(),
                        _ => o.is_ge(),
                    })]
                }
                _ => return err("comparison needs single values"),
            }
        }
        BinOp::Union => {
            let mut all: Coll<'a> = Vec::new();
            for item in left.into_iter().chain(right) {
                if !all.iter().any(|seen| items_equal(seen, &item)) {
                    all.push(item);
                }
            }
            all
        }
        BinOp::In | BinOp::Contains => {
            let (needle, hay) = if op == BinOp::In {
                (left, right)
            } else {
                (right, left)
            };
            match needle.as_slice() {
                [] => vec![],
                [n] => vec![Item::Bool(hay.iter().any(|h| items_equal(h, n)))],
                _ => return err("membership needs a single value"),
            }
        }
        BinOp::Concat => {
            let text = |c: &Coll<'a>| -> R<String> {
                match c.as_slice() {
                    [] => Ok(String::new()),
                    [item] => match item.scalar() {
                        Scalar::Str(s) => Ok(s.to_owned()),
                        _ => err("& needs strings"),
                    },
                    _ => err("& needs single values"),
                }
            };
            vec![Item::Str(Cow::Owned(text(&left)? + &text(&right)?))]
        }
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => {
            arithmetic(op, &left, &right)?
        }
        BinOp::Is | BinOp::As => unreachable!("handled above"),
    })
}

fn arithmetic<'a>(op: BinOp, left: &[Item<'a>], right: &[Item<'a>]) -> R<Coll<'a>> {
    let (x, y) = match (left, right) {
        ([], _) | (_, []) => return Ok(vec![]),
        ([x], [y]) => (x, y),
        _ => return err("arithmetic needs single values"),
    };
    if let (BinOp::Add, Scalar::Str(p), Scalar::Str(q)) = (op, x.scalar(), y.scalar()) {
        return Ok(vec![Item::Str(Cow::Owned(format!("{p}{q}")))]);
    }
    let int = |i: &Item<'_>| match i {
        Item::Int(v) => Some(*v),
        Item::Node {
            json: Json::Number(n),
            ..
        } => n.parse().ok(),
        _ => None,
    };
    if let (Some(p), Some(q)) = (int(x), int(y)) {
        return Ok(match op {
            BinOp::Add => p.checked_add(q).map(Item::Int),
            BinOp::Sub => p.checked_sub(q).map(Item::Int),
            BinOp::Mul => p.checked_mul(q).map(Item::Int),
            BinOp::Div => (q != 0).then(|| decimal(p as f64 / q as f64)),
            BinOp::IntDiv => p.checked_div(q).map(Item::Int),
            _ => p.checked_rem(q).map(Item::Int),
        }
        .into_iter()
        .collect());
    }
    let (Scalar::Num(p), Scalar::Num(q)) = (x.scalar(), y.scalar()) else {
        return err("arithmetic needs numbers");
    };
    Ok(match op {
        BinOp::Add => vec![decimal(p + q)],
        BinOp::Sub => vec![decimal(p - q)],
        BinOp::Mul => vec![decimal(p * q)],
        BinOp::Div if q != 0.0 => vec![decimal(p / q)],
        BinOp::IntDiv if q != 0.0 => vec![Item::Int((p / q).trunc() as i64)],
        BinOp::Mod if q != 0.0 => vec![decimal(p % q)],
        _ => vec![],
    })
}

pub(super) fn type_arg(args: &[Expr], function: &str) -> R<String> {
    match args {
        [Expr::Member(base, name)] if **base == Expr::This => Ok(name.clone()),
        [Expr::TypeName(name)] => Ok(name.clone()),
        [Expr::Member(base, name)] => match &**base {
            Expr::Member(root, _) if **root == Expr::This => Ok(name.clone()), // FHIR.Patient
            _ => err(format!("{function}() needs a type name")),
        },
        _ => err(format!("{function}() needs a type name")),
    }
}

fn call<'a>(function: Function, base: Coll<'a>, args: &[Expr], ctx: Ctx) -> R<Coll<'a>> {
    let name = function.name();
    // Argument counts were checked when the path was parsed.
    Ok(match function {
        Function::Where => {
            let mut out = Vec::new();
            for (i, item) in base.into_iter().enumerate() {
                let keep = eval(&args[0], std::slice::from_ref(&item), ctx, Some(i as i64))?;
                if singleton_bool(&keep)? == Some(true) {
                    out.push(item);
                }
            }
            out
        }
        Function::Select => {
            let mut out = Vec::new();
            for (i, item) in base.iter().enumerate() {
                out.extend(eval(
                    &args[0],
                    std::slice::from_ref(item),
                    ctx,
                    Some(i as i64),
                )?);
            }
            out
        }
        Function::Exists => {
            if args.is_empty() {
                vec![Item::Bool(!base.is_empty())]
            } else {
                vec![Item::Bool(
                    !call(Function::Where, base, args, ctx)?.is_empty(),
                )]
            }
        }
        Function::Empty => {
            vec![Item::Bool(base.is_empty())]
        }
        Function::Count => {
            vec![Item::Int(base.len() as i64)]
        }
        Function::First => base.into_iter().take(1).collect(),
        Function::Last => base.into_iter().last().into_iter().collect(),
        Function::Not => singleton_bool(&base)?
            .map(|b| Item::Bool(!b))
            .into_iter()
            .collect(),
        Function::HasValue => {
            vec![Item::Bool(
                matches!(base.as_slice(), [item] if !matches!(item.scalar(), Scalar::Other)),
            )]
        }
        Function::OfType => {
            let ty = type_arg(args, name)?;
            base.into_iter().filter(|item| is_type(item, &ty)).collect()
        }
        Function::Extension => {
            let url = match eval(&args[0], &[], ctx, None)?.as_slice() {
                [item] => match item.scalar() {
                    Scalar::Str(s) => s.to_owned(),
                    _ => return err("extension() needs a url string"),
                },
                _ => return err("extension() needs a url string"),
            };
            let mut out = Vec::new();
            for item in &base {
                let mut extensions = Vec::new();
                member(item, "extension", &mut extensions);
                out.extend(extensions.into_iter().filter(|e| match e {
                    Item::Node { json, .. } => {
                        json.get("url").and_then(Json::as_str) == Some(url.as_str())
                    }
                    _ => false,
                }));
            }
            out
        }
        Function::Join => {
            let separator = match args {
                [] => String::new(),
                [sep] => match eval(sep, &[], ctx, None)?.as_slice() {
                    [item] => match item.scalar() {
                        Scalar::Str(s) => s.to_owned(),
                        _ => return err("join() needs a string separator"),
                    },
                    _ => return err("join() needs a string separator"),
                },
                _ => return err("join() takes at most one argument"),
            };
            // The SQL-on-FHIR suite joins an empty collection to "" (FHIRPath
            // itself says empty): a column of names then reads "" not null.
            if base.is_empty() {
                return Ok(vec![Item::Str(Cow::Borrowed(""))]);
            }
            let mut parts = Vec::with_capacity(base.len());
            for item in &base {
                match item.scalar() {
                    Scalar::Str(s) => parts.push(s.to_owned()),
                    _ => return err("join() needs strings"),
                }
            }
            vec![Item::Str(Cow::Owned(parts.join(&separator)))]
        }
        Function::GetResourceKey => base
            .iter()
            .filter_map(|item| match item {
                Item::Node { json, .. } => json
                    .get("id")
                    .and_then(Json::as_str)
                    .map(|id| Item::Str(Cow::Borrowed(id))),
                _ => None,
            })
            .collect(),
        Function::GetReferenceKey => {
            let wanted = if args.is_empty() {
                None
            } else {
                Some(type_arg(args, name)?)
            };
            base.iter()
                .filter_map(|item| reference_key(item, wanted.as_deref()))
                .collect()
        }
        Function::LowBoundary | Function::HighBoundary => {
            let high = function == Function::HighBoundary;
            let mut out = Vec::new();
            for item in &base {
                if let Some(b) = boundary::of(item, high) {
                    out.push(b);
                }
            }
            out
        }
        Function::Matches => {
            let pattern = string_arg(&args[0], &base, ctx, name)?;
            match single_text(&base, name)? {
                None => vec![],
                Some(text) => vec![Item::Bool(regex_matches(&pattern, &text)?)],
            }
        }
        Function::Iif => {
            let condition = eval(&args[0], &base, ctx, None)?;
            if singleton_bool(&condition)? == Some(true) {
                eval(&args[1], &base, ctx, None)?
            } else if let Some(otherwise) = args.get(2) {
                eval(otherwise, &base, ctx, None)?
            } else {
                vec![]
            }
        }
        Function::Substring => {
            let Some(text) = single_text(&base, name)? else {
                return Ok(vec![]);
            };
            let start = integer_arg(&args[0], &base, ctx, name)?;
            let length = args
                .get(1)
                .map(|a| integer_arg(a, &base, ctx, name))
                .transpose()?;
            let chars: Vec<char> = text.chars().collect();
            match usize::try_from(start) {
                Ok(start) if start < chars.len() => {
                    let end = match length {
                        Some(n) => start.saturating_add(usize::try_from(n).unwrap_or(0)),
                        None => chars.len(),
                    }
                    .min(chars.len());
                    vec![Item::Str(Cow::Owned(chars[start..end].iter().collect()))]
                }
                _ => vec![],
            }
        }
        Function::ToInteger => match base.as_slice() {
            [] => vec![],
            [item] => match item {
                Item::Int(i) => vec![Item::Int(*i)],
                Item::Bool(b) => vec![Item::Int(i64::from(*b))],
                _ => match item.scalar() {
                    Scalar::Str(s) => s.parse().map(Item::Int).into_iter().collect(),
                    Scalar::Num(n) if n.fract() == 0.0 => vec![Item::Int(n as i64)],
                    _ => vec![],
                },
            },
            _ => return err("toInteger() needs a single value"),
        },
        Function::Length => match single_text(&base, name)? {
            Some(text) => vec![Item::Int(text.chars().count() as i64)],
            None => vec![],
        },
        Function::ToString => base
            .iter()
            .filter_map(|item| match item.scalar() {
                Scalar::Str(s) => Some(s.to_owned()),
                Scalar::Bool(b) => Some(b.to_string()),
                Scalar::Num(_) => Some(match item {
                    Item::Node {
                        json: Json::Number(n),
                        ..
                    } => n.to_string(),
                    Item::Dec(d) => d.to_string(),
                    Item::Int(i) => i.to_string(),
                    _ => return None,
                }),
                Scalar::Other => None,
            })
            .map(|s| Item::Str(Cow::Owned(s)))
            .collect(),
    })
}

/// The string a string function is called on: `None` for an empty input.
fn single_text(base: &[Item<'_>], name: &str) -> R<Option<String>> {
    match base {
        [] => Ok(None),
        [item] => match item.scalar() {
            Scalar::Str(s) => Ok(Some(s.to_owned())),
            _ => err(format!("{name}() needs a string")),
        },
        _ => err(format!("{name}() needs a single value, got {}", base.len())),
    }
}

fn string_arg(arg: &Expr, focus: &[Item<'_>], ctx: Ctx, name: &str) -> R<String> {
    let value = eval(arg, focus, ctx, None)?;
    match value.as_slice() {
        [item] => match item.scalar() {
            Scalar::Str(s) => Ok(s.to_owned()),
            _ => err(format!("{name}() needs a string argument")),
        },
        _ => err(format!("{name}() needs one string argument")),
    }
}

fn integer_arg(arg: &Expr, focus: &[Item<'_>], ctx: Ctx, name: &str) -> R<i64> {
    let value = eval(arg, focus, ctx, None)?;
    match value.as_slice() {
        [Item::Int(i)] => Ok(*i),
        _ => err(format!("{name}() needs an integer argument")),
    }
}

/// `matches()`: a partial match of `pattern` (FHIRPath uses regex syntax
/// close to Rust's). Patterns are few (a profile's invariants), so each
/// thread keeps the ones it compiled.
fn regex_matches(pattern: &str, text: &str) -> R<bool> {
    thread_local! {
        static COMPILED: std::cell::RefCell<std::collections::HashMap<String, regex::Regex>> =
            Default::default();
    }
    COMPILED.with(|compiled| {
        let mut compiled = compiled.borrow_mut();
        if !compiled.contains_key(pattern) {
            let regex = regex::Regex::new(pattern)
                .map_err(|e| EvalError(format!("matches(): invalid pattern {pattern:?}: {e}")))?;
            compiled.insert(pattern.to_owned(), regex);
        }
        Ok(compiled[pattern].is_match(text))
    })
}

/// `Type/id` (also absolute URLs ending in `Type/id`, and `Type/id/_history/v`).
/// Conditional references (`Type?identifier=…`) and contained ones (`#x`) have no key.
/// The id a Reference item points at, if it is a `Type/id` of type `wanted`.
pub(super) fn reference_key<'a>(item: &Item<'a>, wanted: Option<&str>) -> Option<Item<'a>> {
    let Item::Node { json, .. } = item else {
        return None;
    };
    let (ty, id) = reference_parts(json.get("reference")?.as_str()?)?;
    if wanted.is_some_and(|w| w != ty) {
        return None;
    }
    Some(Item::Str(Cow::Borrowed(id)))
}

fn reference_parts(reference: &str) -> Option<(&str, &str)> {
    if reference.contains('?') || reference.starts_with('#') {
        return None;
    }
    let path = crate::fhir::without_history(reference);
    let (rest, id) = path.rsplit_once('/')?;
    let ty = rest.rsplit('/').next()?;
    // A key that is no FHIR id would join to nothing, or to the wrong row.
    (crate::fhir::is_valid_resource_type(ty) && crate::fhir::is_valid_id(id)).then_some((ty, id))
}
