//! The FHIRPath subset SQL-on-FHIR v2 requires: paths, indexers, `where`,
//! `exists`, `empty`, `first`, `last`, `count`, `not`, `ofType`,
//! `extension`, `join`, `getResourceKey`, `getReferenceKey`,
//! `lowBoundary`/`highBoundary`, boolean logic, comparison, arithmetic,
//! `%constants` and `%rowIndex`. Parsed once ([`parse`]), evaluated per
//! resource ([`evaluate`]).

mod ast;
mod boundary;
mod eval;
mod function;
mod item;
mod parse;
mod plan;

pub use ast::{BinOp, Expr, Literal};
pub use eval::{EvalError, evaluate, is_choice_member, singleton_bool};
pub use function::Function;
pub use item::Item;
pub use parse::{ParseError, parse};
pub use plan::{Items, Plan};
