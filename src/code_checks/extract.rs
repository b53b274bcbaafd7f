//! Finding the coded elements of a parsed resource and checking them.
//!
//! Paths are built in the line's arena (no heap traffic); codings are
//! borrowed from the tree.

use bumpalo::Bump;

use crate::terminology::{Checker, Coding, Concept, Finding, Quantity, Target};
use crate::view::Json;

/// Members holding a CodeableConcept or a Coding (or an array of either)
/// that are checked, on the resource and on each of its `component`s: the
/// coded elements of the US Core types analysts join on.
pub const CHECKED_MEMBERS: [&str; 8] = [
    "code",
    "category",
    "valueCodeableConcept",
    "medicationCodeableConcept",
    "reasonCode",
    "vaccineCode",
    "type",
    "class",
];

/// Members holding a Quantity whose unit is checked (UCUM).
pub const QUANTITY_MEMBERS: [&str; 2] = ["valueQuantity", "doseQuantity"];

/// Checks every coded element of `resource`; appends problems to
/// `findings` and the codings concept maps add to `added` (by position in
/// the returned list of the concepts they are added to).
pub(super) fn check_resource<'t, 'a>(
    checker: &mut Checker<'t>,
    resource: &'a Json<'a>,
    arena: &'a Bump,
    resource_type: &'a str,
    findings: &mut Vec<Finding<'a>>,
    added: &mut Vec<(usize, &'t Target)>,
) -> Vec<&'a Json<'a>>
where
    't: 'a,
{
    let mut walk = Walk {
        checker,
        arena,
        findings,
        added,
        mapped: Vec::new(),
    };
    let Json::Object(members) = resource else {
        return walk.mapped;
    };
    walk.members(resource_type, members);
    if let Some((_, Json::Array(components))) = members.iter().find(|(k, _)| *k == "component") {
        for (i, component) in components.iter().enumerate() {
            if let Json::Object(members) = component {
                let prefix = bumpalo::format!(in arena, "{}.component[{}]", resource_type, i);
                walk.members(prefix.into_bump_str(), members);
            }
        }
    }
    walk.mapped
}

struct Walk<'w, 't, 'a> {
    checker: &'w mut Checker<'t>,
    arena: &'a Bump,
    findings: &'w mut Vec<Finding<'a>>,
    added: &'w mut Vec<(usize, &'t Target)>,
    mapped: Vec<&'a Json<'a>>,
}

impl<'t: 'a, 'a> Walk<'_, 't, 'a> {
    fn members(&mut self, prefix: &'a str, members: &'a [(&'a str, Json<'a>)]) {
        for (name, value) in members {
            let coded = CHECKED_MEMBERS.contains(name);
            let quantity = !coded && QUANTITY_MEMBERS.contains(name);
            if !coded && !quantity {
                continue;
            }
            let path = bumpalo::format!(in self.arena, "{}.{}", prefix, name).into_bump_str();
            match value {
                Json::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let path =
                            bumpalo::format!(in self.arena, "{}[{}]", path, i).into_bump_str();
                        self.element(path, item, quantity);
                    }
                }
                item => self.element(path, item, quantity),
            }
        }
    }

    fn element(&mut self, path: &'a str, value: &'a Json<'a>, quantity: bool) {
        let Json::Object(members) = value else {
            // A primitive `code` (a status-like element), not a coding.
            return;
        };
        if quantity {
            let quantity = Quantity {
                path,
                system: string(members, "system"),
                code: string(members, "code"),
            };
            self.checker.check_quantity(&quantity, self.findings);
            return;
        }
        match members.iter().find(|(k, _)| *k == "coding") {
            Some((_, Json::Array(items))) => {
                let codings = self
                    .arena
                    .alloc_slice_fill_iter(items.iter().map(coding_of));
                let concept = Concept { path, codings };
                self.checker.check_concept(&concept, self.findings);
                let mut targets = Vec::new();
                if self.checker.map_concept(&concept, &mut targets) > 0 {
                    let at = self.mapped.len();
                    self.mapped.push(value);
                    self.added.extend(targets.into_iter().map(|t| (at, t)));
                }
            }
            Some(_) => {}
            // A lone Coding (`Encounter.class`): checked, nothing can be added to it.
            None if members.iter().any(|(k, _)| *k == "system" || *k == "code") => {
                let codings = self.arena.alloc_slice_fill_iter([coding_of(value)]);
                let concept = Concept { path, codings };
                self.checker.check_concept(&concept, self.findings);
            }
            // Only `text`: nothing coded.
            None => {}
        }
    }
}

fn coding_of<'a>(value: &'a Json<'a>) -> Coding<'a> {
    match value {
        Json::Object(members) => Coding {
            system: string(members, "system"),
            code: string(members, "code"),
            display: string(members, "display"),
        },
        _ => Coding::default(),
    }
}

fn string<'a>(members: &'a [(&'a str, Json<'a>)], key: &str) -> Option<&'a str> {
    members.iter().find_map(|(k, v)| match v {
        Json::String(s) if *k == key => Some(*s),
        _ => None,
    })
}
