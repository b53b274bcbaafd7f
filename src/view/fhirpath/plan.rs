//! A fast path for the path shapes views use most — member chains with
//! `ofType(T)`, `where(member = 'text')`, `where(path.exists())`, `first()`,
//! a final `getReferenceKey([T])`, and a leading `(a | b).first()` —
//! evaluated depth first, with no collection per step. Any other expression
//! returns `None` from [`Plan::compile`] and goes to the general evaluator.
//! Each step calls the general evaluator's own helpers, so the two give the
//! same items (a differential test below and the SQL-on-FHIR suite check it).

use smallvec::SmallVec;

use super::ast::{BinOp, Expr, Literal};
use super::eval::{equals_text, member, member_each, reference_key, type_arg};
use super::function::Function;
use super::item::{Item, is_type};

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Member(String),
    OfType(String),
    /// `where(name = 'text')`
    WhereEq(String, String),
    /// `where(path.exists())`, the path itself a plan
    WhereExists(Plan),
    First,
    ReferenceKey(Option<String>),
    /// `(a | b | ...).first()` at the start of a path: the first item of the
    /// first branch that has one (a union keeps its left side's order, so
    /// that is the union's first item).
    FirstOf(Vec<Plan>),
}

/// A compiled simple path.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    steps: Vec<Step>,
}

/// Items of one evaluation: nearly always zero or one, kept on the stack.
pub type Items<'a> = SmallVec<[Item<'a>; 2]>;

fn walk(expr: &Expr, steps: &mut Vec<Step>) -> Option<()> {
    match expr {
        Expr::This => Some(()),
        Expr::Member(base, name) => {
            walk(base, steps)?;
            steps.push(Step::Member(name.clone()));
            Some(())
        }
        Expr::Call(base, Function::First, args)
            if args.is_empty()
                && steps.is_empty()
                && matches!(**base, Expr::Binary(BinOp::Union, ..)) =>
        {
            let mut branches = Vec::new();
            union_branches(base, &mut branches);
            let plans = branches
                .into_iter()
                .map(Plan::compile)
                .collect::<Option<Vec<Plan>>>()?;
            steps.push(Step::FirstOf(plans));
            Some(())
        }
        Expr::Call(base, function, args) => {
            walk(base, steps)?;
            let name = function.name();
            let step = match (function, args.as_slice()) {
                (Function::First, []) => Step::First,
                (Function::OfType, [_]) => Step::OfType(type_arg(args, name).ok()?),
                (Function::GetReferenceKey, []) => Step::ReferenceKey(None),
                (Function::GetReferenceKey, [_]) => {
                    Step::ReferenceKey(Some(type_arg(args, name).ok()?))
                }
                (Function::Where, [Expr::Binary(BinOp::Eq, left, right)]) => {
                    match (&**left, &**right) {
                        (Expr::Member(base, name), Expr::Literal(Literal::String(text)))
                            if **base == Expr::This =>
                        {
                            Step::WhereEq(name.clone(), text.clone())
                        }
                        _ => return None,
                    }
                }
                (Function::Where, [Expr::Call(inner, Function::Exists, none)])
                    if none.is_empty() =>
                {
                    Step::WhereExists(Plan::compile(inner)?)
                }
                _ => return None,
            };
            steps.push(step);
            Some(())
        }
        _ => None,
    }
}

/// `a | b | c` as [a, b, c].
fn union_branches<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::Binary(BinOp::Union, left, right) => {
            union_branches(left, out);
            union_branches(right, out);
        }
        other => out.push(other),
    }
}

impl Plan {
    /// The plan for `expr`, if it has a supported shape.
    pub fn compile(expr: &Expr) -> Option<Plan> {
        let mut steps = Vec::new();
        walk(expr, &mut steps)?;
        // Reference keys are strings: only `first()` may follow them.
        let key_at = steps
            .iter()
            .position(|s| matches!(s, Step::ReferenceKey(_)));
        if let Some(at) = key_at
            && steps[at + 1..].iter().any(|s| *s != Step::First)
        {
            return None;
        }
        // `first()` steps are tracked as bits of a u64 (see `run`).
        (!steps.is_empty() && steps.len() < 64).then_some(Plan { steps })
    }

    /// The items the path yields from `focus`.
    ///
    /// Depth first: each item runs the rest of the path before the next one
    /// is looked at, so the results come in the order a step-by-step
    /// evaluation gives (every step maps each item to a run of items, and
    /// mapping distributes over concatenation), with no collection per step,
    /// and a `first()` ends the walk as soon as it has its item.
    pub fn eval<'a>(&self, focus: &Item<'a>) -> Items<'a> {
        let mut out = Items::new();
        let mut fired = 0u64;
        self.run(0, focus.clone(), &mut fired, &mut out);
        out
    }

    /// Runs steps `at..` on `item`, appending what comes out to `out`.
    /// `fired` has bit k set once the `first()` at step k let its item
    /// through: later items reaching it are dropped, so the loops before it
    /// stop.
    fn run<'a>(&self, at: usize, item: Item<'a>, fired: &mut u64, out: &mut Items<'a>) {
        let Some(step) = self.steps.get(at) else {
            out.push(item);
            return;
        };
        let next = at + 1;
        match step {
            Step::Member(name) => member_each(&item, name, &mut |child| {
                self.run(next, child, fired, out);
                *fired >> next == 0
            }),
            Step::OfType(ty) => {
                if is_type(&item, ty) {
                    self.run(next, item, fired, out);
                }
            }
            Step::WhereEq(name, text) => {
                let mut values: Items<'a> = SmallVec::new();
                member(&item, name, &mut values);
                if matches!(values.as_slice(), [value] if equals_text(value, text)) {
                    self.run(next, item, fired, out);
                }
            }
            Step::WhereExists(plan) => {
                if !plan.eval(&item).is_empty() {
                    self.run(next, item, fired, out);
                }
            }
            Step::First => {
                if *fired & (1 << at) == 0 {
                    *fired |= 1 << at;
                    self.run(next, item, fired, out);
                }
            }
            Step::ReferenceKey(wanted) => {
                if let Some(key) = reference_key(&item, wanted.as_deref()) {
                    self.run(next, key, fired, out);
                }
            }
            Step::FirstOf(branches) => {
                let first = branches
                    .iter()
                    .find_map(|branch| branch.eval(&item).into_iter().next());
                if let Some(first) = first {
                    self.run(next, first, fired, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bumpalo::Bump;

    use super::super::{evaluate, parse};
    use super::*;
    use crate::view::json::Json;

    const RESOURCES: &[&str] = &[
        r##"{"resourceType":"Observation","id":"o1","status":"final",
            "code":{"coding":[{"system":"http://loinc.org","code":"8302-2"},{"system":"http://snomed.info/sct","code":"50373000"},{"code":"x"}],"text":"Height"},
            "category":[{"coding":[{"code":"vital-signs"}]},{"coding":[{"code":"exam"},{"code":"other"}]}],
            "subject":{"reference":"Patient/p1"},"encounter":{"reference":"https://ehr/fhir/Encounter/e1/_history/2"},
            "effectiveDateTime":"2020-01-01T00:00:00Z","valueQuantity":{"value":1.50,"unit":"m"},
            "performer":[{"reference":"Practitioner/d1"},{"reference":"#contained"},{"display":"no ref"}]}"##,
        r#"{"resourceType":"Observation","id":"o2","code":{"coding":[{"system":"http://loinc.org","code":"a"},{"system":"http://loinc.org","code":"b"}]},
            "valueString":"positive","effectivePeriod":{"start":"2020"},"subject":{"reference":"Group/g1"},"identifier":[null,{"system":"s","value":"v"}]}"#,
        r#"{"resourceType":"Patient","id":"p1","name":[{"use":"official","family":"Doe","given":["J","K"]},{"family":"Roe"}],
            "identifier":[{"system":["weird"],"value":"x"},{"system":"s","value":"y"}],"deceasedBoolean":false,"active":true}"#,
    ];

    const PATHS: &[&str] = &[
        "id",
        "status",
        "code.coding.code",
        "code.coding.code.first()",
        "code.coding.where(system = 'http://loinc.org').code",
        "code.coding.where(system = 'http://loinc.org').code.first()",
        "code.coding.where(system = 'nope').code.first()",
        "category.coding.code.first()",
        "category.coding.code",
        "subject.getReferenceKey(Patient)",
        "subject.getReferenceKey(Patient).first()",
        "subject.getReferenceKey()",
        "encounter.getReferenceKey(Encounter).first()",
        "performer.getReferenceKey()",
        "value.ofType(Quantity).value",
        "value.ofType(Quantity).unit",
        "value.ofType(string)",
        "value.ofType(CodeableConcept).coding.code.first()",
        "effective.ofType(dateTime)",
        "effective.ofType(Period).start",
        "name.where(use = 'official').family.first()",
        "name.family",
        "name.given.first()",
        "identifier.where(system = 's').value.first()",
        "deceased.ofType(boolean)",
        "Patient.name.family.first()",
        "active",
        "missing.first()",
        "(code.coding.display | code.text).first()",
        "(code.text | code.coding.display).first()",
        "(missing | name.family | name.given).first()",
        "(name.where(use = 'official') | name).first().family",
        "(value.ofType(CodeableConcept).coding.display | value.ofType(CodeableConcept).text).first()",
        "(subject.getReferenceKey(Patient) | id).first()",
        "category.where(coding.where(code = 'exam').exists()).coding.code",
        "category.where(coding.exists()).coding.code.first()",
        "name.where(given.exists()).family",
        "name.where(use.exists()).family.first()",
        "category.first().coding.code",
        "category.coding.first().code",
        "category.first().coding.code.first()",
        "category.coding.code.first().first()",
        "name.first().given",
        "name.given.first()",
        "performer.getReferenceKey().first()",
        "identifier.value.first()",
    ];

    #[test]
    fn the_plan_gives_what_the_general_evaluator_gives() {
        for text in RESOURCES {
            let arena = Bump::new();
            let json = Json::parse(text, &arena).unwrap();
            let focus = Item::Node {
                json: &json,
                ty: None,
            };
            for path in PATHS {
                let expr = parse(path).unwrap();
                let plan = Plan::compile(&expr).unwrap_or_else(|| panic!("{path}: no plan"));
                let general = evaluate(&expr, std::slice::from_ref(&focus), 0).unwrap();
                let fast = plan.eval(&focus);
                assert_eq!(fast.as_slice(), general.as_slice(), "{path} on {text}");
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_general_evaluator() {
        for path in [
            "(code.coding.display | code.text)",
            "(code.coding.display | code.text).first().exists()",
            "component.where(code.coding.where(code = '1').exists() and true).value",
            "component.where(exists()).value",
            "name.first().given.join(' ')",
            "subject.getReferenceKey().id",
            "code.coding[0].code",
            "%rowIndex",
            "where(id = 'x')",
        ] {
            let expr = parse(path).unwrap();
            if path == "where(id = 'x')" {
                // A bare where on the focus is a supported shape.
                assert!(Plan::compile(&expr).is_some());
                continue;
            }
            assert_eq!(Plan::compile(&expr), None, "{path}");
        }
    }
}
