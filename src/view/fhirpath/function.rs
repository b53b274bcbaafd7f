//! The FHIRPath functions the engine implements, resolved from their names
//! when a path is parsed: a misspelt function, a wrong argument count, or a
//! FHIRPath function the engine does not implement is an error then, never
//! a per-resource failure, and evaluation dispatches on the enum.

/// A function the evaluator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Where,
    Select,
    Exists,
    Empty,
    Count,
    First,
    Last,
    Not,
    HasValue,
    OfType,
    Extension,
    Join,
    GetResourceKey,
    GetReferenceKey,
    LowBoundary,
    HighBoundary,
    ToString,
    Matches,
    Iif,
    Substring,
    ToInteger,
    Length,
}

/// (name, function, fewest and most arguments).
const IMPLEMENTED: &[(&str, Function, usize, usize)] = &[
    ("where", Function::Where, 1, 1),
    ("select", Function::Select, 1, 1),
    ("exists", Function::Exists, 0, 1),
    ("empty", Function::Empty, 0, 0),
    ("count", Function::Count, 0, 0),
    ("first", Function::First, 0, 0),
    ("last", Function::Last, 0, 0),
    ("not", Function::Not, 0, 0),
    ("hasValue", Function::HasValue, 0, 0),
    ("ofType", Function::OfType, 1, 1),
    ("extension", Function::Extension, 1, 1),
    ("join", Function::Join, 0, 1),
    ("getResourceKey", Function::GetResourceKey, 0, 0),
    ("getReferenceKey", Function::GetReferenceKey, 0, 1),
    ("lowBoundary", Function::LowBoundary, 0, 0),
    ("highBoundary", Function::HighBoundary, 0, 0),
    ("toString", Function::ToString, 0, 0),
    ("matches", Function::Matches, 1, 1),
    ("iif", Function::Iif, 2, 3),
    ("substring", Function::Substring, 1, 2),
    ("toInteger", Function::ToInteger, 0, 0),
    ("length", Function::Length, 0, 0),
];

/// FHIRPath (N1 and 2.0) and FHIR-specific functions the engine does not
/// implement: named as such, so a user knows the path is valid FHIRPath.
const NOT_IMPLEMENTED: &[&str] = &[
    "abs",
    "aggregate",
    "all",
    "allFalse",
    "allTrue",
    "anyFalse",
    "anyTrue",
    "as",
    "ceiling",
    "children",
    "combine",
    "comparable",
    "conformsTo",
    "contains",
    "convertsToBoolean",
    "convertsToDate",
    "convertsToDateTime",
    "convertsToDecimal",
    "convertsToInteger",
    "convertsToQuantity",
    "convertsToString",
    "convertsToTime",
    "decode",
    "descendants",
    "distinct",
    "encode",
    "endsWith",
    "escape",
    "exclude",
    "exp",
    "floor",
    "hasTemplateIdOf",
    "htmlChecks",
    "indexOf",
    "intersect",
    "is",
    "isDistinct",
    "lastIndexOf",
    "ln",
    "log",
    "lower",
    "matchesFull",
    "memberOf",
    "now",
    "power",
    "precision",
    "repeat",
    "replace",
    "replaceMatches",
    "resolve",
    "round",
    "single",
    "skip",
    "sort",
    "split",
    "sqrt",
    "startsWith",
    "subsetOf",
    "supersetOf",
    "tail",
    "take",
    "timeOfDay",
    "toBoolean",
    "toChars",
    "toDate",
    "toDateTime",
    "toDecimal",
    "toQuantity",
    "toTime",
    "today",
    "trace",
    "trim",
    "truncate",
    "type",
    "union",
    "unescape",
    "upper",
    "yearOf",
];

impl Function {
    /// The function `name` called with `args` arguments, or what is wrong.
    pub fn resolve(name: &str, args: usize) -> Result<Self, String> {
        if let Some(&(_, function, min, max)) = IMPLEMENTED.iter().find(|(n, ..)| *n == name) {
            if (min..=max).contains(&args) {
                return Ok(function);
            }
            let takes = match (min, max) {
                (a, b) if a == b => format!("{a} argument(s)"),
                (a, b) => format!("{a} to {b} arguments"),
            };
            return Err(format!("{name}() takes {takes}, got {args}"));
        }
        if NOT_IMPLEMENTED.contains(&name) {
            return Err(format!(
                "{name}() is a FHIRPath function fhirlake's view engine does not implement"
            ));
        }
        let near = IMPLEMENTED
            .iter()
            .map(|(n, ..)| *n)
            .find(|n| n.eq_ignore_ascii_case(name) || strsim::levenshtein(n, name) <= 2);
        Err(match near {
            Some(near) => format!("unknown function {name}() (did you mean {near}()?)"),
            None => format!("unknown function {name}()"),
        })
    }

    pub fn name(self) -> &'static str {
        IMPLEMENTED
            .iter()
            .find(|(_, f, ..)| *f == self)
            .map(|(n, ..)| *n)
            .expect("every function has a name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_resolve_by_name_and_argument_count() {
        assert_eq!(Function::resolve("first", 0), Ok(Function::First));
        assert_eq!(Function::resolve("join", 1), Ok(Function::Join));
        assert_eq!(Function::resolve("exists", 1), Ok(Function::Exists));
        assert_eq!(Function::First.name(), "first");
        let wrong = Function::resolve("first", 1).unwrap_err();
        assert!(
            wrong.contains("first() takes 0 argument(s), got 1"),
            "{wrong}"
        );
        let typo = Function::resolve("frist", 0).unwrap_err();
        assert!(
            typo.contains("unknown function frist()") && typo.contains("first()"),
            "{typo}"
        );
        let valid = Function::resolve("startsWith", 1).unwrap_err();
        assert!(valid.contains("does not implement"), "{valid}");
        for (name, function, min, _) in IMPLEMENTED {
            assert_eq!(Function::resolve(name, *min), Ok(*function));
            assert!(!NOT_IMPLEMENTED.contains(name), "{name} is implemented");
        }
    }
}
