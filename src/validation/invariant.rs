//! A profile's `constraint` invariants of severity error, compiled once with
//! the project's FHIRPath engine and evaluated on each element they apply
//! to. An invariant the engine cannot evaluate is listed, never failed.

use serde_json::Value;

use crate::view::Json;
use crate::view::fhirpath::{self, Expr, Item};

/// Invariants every element carries (`ele-1`: a value or children; `ext-1`:
/// an extension has a value or extensions, not both): in JSON they only
/// fail on empty objects, and evaluating them on every element would cost
/// more than the rest of the validation.
const ON_EVERY_ELEMENT: [&str; 2] = ["ele-1", "ext-1"];

/// One compiled invariant.
#[derive(Debug)]
pub struct Invariant {
    pub key: String,
    /// What it says, in the IG's words.
    pub human: String,
    expr: Expr,
    /// The members of the value the expression reads, when it reads the
    /// value only through them (see [`Expr::focus_members`]): a value
    /// holding none of them (most resources have no `contained`, which
    /// three `dom-*` invariants of every profile read) gets `when_absent`
    /// without an evaluation.
    reads: Option<Vec<String>>,
    when_absent: Outcome,
}

/// An invariant not evaluated, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unsupported {
    pub key: String,
    pub element: String,
    pub reason: String,
}

/// What an invariant says of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Holds,
    Fails,
    /// The expression errs on this value (e.g. `telecom or endpoint` with
    /// two telecoms, which strict FHIRPath cannot make a boolean of).
    NotEvaluable,
}

/// The error invariants of an element (`constraint` of its snapshot entry).
pub fn compile(
    element: &str,
    constraints: Option<&Value>,
    unsupported: &mut Vec<Unsupported>,
) -> Vec<Invariant> {
    let mut compiled = Vec::new();
    for constraint in constraints.and_then(Value::as_array).into_iter().flatten() {
        let text = |k: &str| constraint.get(k).and_then(Value::as_str).unwrap_or("");
        if text("severity") != "error" || ON_EVERY_ELEMENT.contains(&text("key")) {
            continue;
        }
        let expression = text("expression");
        let mut skip = |reason: String| {
            unsupported.push(Unsupported {
                key: text("key").to_owned(),
                element: element.to_owned(),
                reason,
            })
        };
        if expression.is_empty() {
            skip("no FHIRPath expression".into());
            continue;
        }
        if expression.contains('%') {
            skip(format!(
                "{expression}: refers to %resource or another environment variable"
            ));
            continue;
        }
        match fhirpath::parse(expression) {
            Ok(expr) => {
                let reads = expr
                    .focus_members()
                    .map(|names| names.into_iter().map(str::to_owned).collect());
                let when_absent = evaluate(&expr, &Json::Object(&[]), None);
                compiled.push(Invariant {
                    key: text("key").to_owned(),
                    human: text("human").to_owned(),
                    expr,
                    reads,
                    when_absent,
                })
            }
            Err(e) => skip(format!("{expression}: {e}")),
        }
    }
    compiled
}

impl Invariant {
    /// A finding's message.
    pub fn failed(&self) -> String {
        format!("constraint {} failed: {}", self.key, self.human)
    }

    /// Evaluates it with `value` as `$this` (`ty`: the type a choice
    /// element's member name gives it).
    pub fn on<'a>(&self, value: &'a Json<'a>, ty: Option<&'a str>) -> Outcome {
        if let Some(reads) = &self.reads
            && !holds_any(value, reads)
        {
            return self.when_absent;
        }
        evaluate(&self.expr, value, ty)
    }
}

fn evaluate<'a>(expr: &Expr, value: &'a Json<'a>, ty: Option<&'a str>) -> Outcome {
    let focus = [Item::Node { json: value, ty }];
    match fhirpath::evaluate(expr, &focus, 0).and_then(|result| fhirpath::singleton_bool(&result)) {
        // An empty result is false, as the reference validator reads
        // it (`telecom or endpoint` with neither fails pd-1).
        Ok(Some(false) | None) => Outcome::Fails,
        Ok(Some(true)) => Outcome::Holds,
        Err(_) => Outcome::NotEvaluable,
    }
}

/// Whether `value` has a member FHIRPath would find by one of `names`:
/// the name itself or a choice member (`value` finds `valueQuantity`),
/// by the evaluator's own rule. Anything but an object has none.
fn holds_any(value: &Json<'_>, names: &[String]) -> bool {
    let Json::Object(members) = value else {
        return false;
    };
    members.iter().any(|(key, _)| {
        names
            .iter()
            .any(|name| key == name || fhirpath::is_choice_member(key, name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(expression: &str, resource: &str) -> Option<bool> {
        let arena = bumpalo::Bump::new();
        let json = Json::parse(resource, &arena).unwrap();
        let constraint = serde_json::json!([{"key": "t-1", "severity": "error", "human": "h", "expression": expression}]);
        let mut unsupported = Vec::new();
        let compiled = compile("X", Some(&constraint), &mut unsupported);
        assert!(unsupported.is_empty(), "{unsupported:?}");
        match compiled[0].on(&json, None) {
            Outcome::Holds => Some(true),
            Outcome::Fails => Some(false),
            Outcome::NotEvaluable => None,
        }
    }

    /// US Core's NPI check digit invariant (us-core-17: Luhn over the
    /// 10 digits with the 80840 prefix's 24), which needs `select`, `iif`,
    /// `substring`, `toInteger` and `mod`.
    #[test]
    fn the_npi_check_digit_invariant_runs_on_the_engine() {
        let npi = "(((select(value.substring(0,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(1,1).toInteger())+(select(value.substring(2,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(3,1).toInteger())+(select(value.substring(4,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(5,1).toInteger())+(select(value.substring(6,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(7,1).toInteger())+(select(value.substring(8,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(9,1).toInteger()) + 24)mod 10=0)";
        // 1234567893 is CMS's published example of a valid NPI.
        assert_eq!(holds(npi, r#"{"value":"1234567893"}"#), Some(true));
        assert_eq!(holds(npi, r#"{"value":"1234567890"}"#), Some(false));
        let ten_digits = "value.matches('^[0-9]{10}$')";
        assert_eq!(holds(ten_digits, r#"{"value":"1234567893"}"#), Some(true));
        assert_eq!(holds(ten_digits, r#"{"value":"12345"}"#), Some(false));
        assert_eq!(
            holds("value.length() = 5", r#"{"value":"12345"}"#),
            Some(true)
        );
        // Two telecoms cannot be one boolean: not evaluable, not failed.
        assert_eq!(
            holds("telecom or endpoint", r#"{"telecom":[{"a":1},{"b":2}]}"#),
            None
        );
        assert_eq!(holds("telecom or endpoint", r#"{"id":"x"}"#), Some(false));
    }

    /// Skipping an invariant whose members are absent gives what
    /// evaluating it gives, for each outcome it can have.
    #[test]
    fn an_invariant_on_absent_members_gives_its_evaluated_outcome() {
        let cases = [
            ("contained.contained.empty()", Some(vec!["contained"])),
            ("telecom or endpoint", Some(vec!["telecom", "endpoint"])),
            (
                "value.ofType(Quantity).system.empty() or value.ofType(Quantity).system = 'http://unitsofmeasure.org'",
                Some(vec!["value", "value"]),
            ),
            (
                "abatement.empty() or clinicalStatus.coding.where(code='active').empty()",
                Some(vec!["abatement", "clinicalStatus"]),
            ),
            (
                "component.where(code.exists()).count() > 1",
                Some(vec!["component"]),
            ),
            (
                "$this is DateTime implies $this.toString().length() >= 10",
                None,
            ),
            ("exists()", None),
            ("Patient.name.exists()", None),
        ];
        let values = [
            r#"{"resourceType":"Patient","id":"a"}"#,
            r#"{"resourceType":"Patient","contained":[{"resourceType":"Patient","contained":[{}]}]}"#,
            r#"{"telecom":[{"a":1},{"b":2}]}"#,
            r#"{"valueQuantity":{"system":"http://x"}}"#,
            r#"{"valueString":"s"}"#,
            r#"{"abatementDateTime":"2020","clinicalStatus":{"coding":[{"code":"active"}]}}"#,
            r#"{"component":[{"code":{}},{"code":{}}]}"#,
            r#""2020-01-01""#,
            r#"{}"#,
        ];
        let arena = bumpalo::Bump::new();
        for (expression, reads) in cases {
            let constraint = serde_json::json!([{"key": "t-1", "severity": "error", "human": "h", "expression": expression}]);
            let compiled = compile("X", Some(&constraint), &mut Vec::new());
            let invariant = &compiled[0];
            let expected: Option<Vec<String>> =
                reads.map(|r| r.into_iter().map(str::to_owned).collect());
            assert_eq!(invariant.reads, expected, "{expression}");
            for value in values {
                let json = Json::parse(value, &arena).unwrap();
                assert_eq!(
                    invariant.on(&json, None),
                    evaluate(&invariant.expr, &json, None),
                    "{expression} on {value}"
                );
            }
        }
    }

    /// `and`, `or` and `implies` decided by their left side do not
    /// evaluate the right (here, one that cannot be a boolean).
    #[test]
    fn boolean_operators_stop_at_a_deciding_left_side() {
        let two = r#"{"id":"x","telecom":[{"a":1},{"b":2}]}"#;
        assert_eq!(holds("id.exists() or telecom", two), Some(true));
        assert_eq!(holds("id.empty() and telecom", two), Some(false));
        assert_eq!(holds("id.empty() implies telecom", two), Some(true));
        assert_eq!(holds("id.exists() and telecom", two), None);
    }

    #[test]
    fn invariants_on_every_element_and_environment_variables_are_not_compiled() {
        let constraints = serde_json::json!([
            {"key": "ele-1", "severity": "error", "expression": "hasValue() or (children().count() > id.count())"},
            {"key": "w-1", "severity": "warning", "expression": "id.exists()"},
            {"key": "r-1", "severity": "error", "expression": "%resource.id.exists()"},
            {"key": "h-1", "severity": "error", "expression": "htmlChecks()"},
        ]);
        let mut unsupported = Vec::new();
        assert!(compile("X", Some(&constraints), &mut unsupported).is_empty());
        let keys: Vec<&str> = unsupported.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["r-1", "h-1"]);
    }
}
