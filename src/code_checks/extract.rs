//! Finding the coded elements of a parsed resource and checking them.
//!
//! Codings are borrowed from the tree. Paths (`Observation.category[1]`)
//! are built in the line's arena, and only when something needs them: a
//! finding, or a binding to look up. A clean resource formats none.

use bumpalo::Bump;

use super::tx::TerminologyServer;
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

/// A coding the terminology server is to judge: locally clean, in a
/// system it is asked about.
#[derive(Clone, Copy)]
pub(super) struct Asked<'a> {
    place: Place<'a>,
    pub index: usize,
    pub coding: Coding<'a>,
}

impl<'a> Asked<'a> {
    /// The concept's path (`Observation.code`), made in `arena`.
    pub fn path(&self, arena: &'a Bump) -> &'a str {
        self.place.path(arena)
    }
}

/// Where a job's coded elements go besides the local checks.
pub(super) struct Outputs<'w, 't, 'a> {
    pub findings: &'w mut Vec<Finding<'a>>,
    /// Codings concept maps add, by position in the returned concepts.
    pub added: &'w mut Vec<(usize, &'t Target)>,
    /// With a terminology server: the codings to ask it about.
    pub asked: Option<(&'t TerminologyServer, &'w mut Vec<Asked<'a>>)>,
    /// Coded members checked besides [`CHECKED_MEMBERS`] (`--code-element`).
    pub extra_members: &'t [Box<str>],
}

/// Checks every coded element of `resource`; appends problems to
/// `findings`, the codings concept maps add to `added` (by position in
/// the returned list of the concepts they are added to), and the codings
/// the terminology server is to judge to `asked`.
pub(super) fn check_resource<'t, 'a>(
    checker: &mut Checker<'t>,
    resource: &'a Json<'a>,
    arena: &'a Bump,
    resource_type: &'a str,
    out: Outputs<'_, 't, 'a>,
) -> Vec<&'a Json<'a>>
where
    't: 'a,
{
    let bindings = !checker.terminology().bindings().is_empty();
    let mut walk = Walk {
        checker,
        bindings,
        arena,
        findings: out.findings,
        added: out.added,
        asked: out.asked,
        extra_members: out.extra_members,
        mapped: Vec::new(),
    };
    let Json::Object(members) = resource else {
        return walk.mapped;
    };
    walk.members(resource_type, None, members);
    if let Some((_, Json::Array(components))) = members.iter().find(|(k, _)| *k == "component") {
        for (i, component) in components.iter().enumerate() {
            if let Json::Object(members) = component {
                walk.members(resource_type, Some(i), members);
            }
        }
    }
    walk.mapped
}

struct Walk<'w, 't, 'a> {
    checker: &'w mut Checker<'t>,
    /// The job has bindings: every concept's path is looked up.
    bindings: bool,
    arena: &'a Bump,
    findings: &'w mut Vec<Finding<'a>>,
    added: &'w mut Vec<(usize, &'t Target)>,
    asked: Option<(&'t TerminologyServer, &'w mut Vec<Asked<'a>>)>,
    extra_members: &'t [Box<str>],
    mapped: Vec<&'a Json<'a>>,
}

impl<'t: 'a, 'a> Walk<'_, 't, 'a> {
    fn members(
        &mut self,
        resource_type: &'a str,
        component: Option<usize>,
        members: &'a [(&'a str, Json<'a>)],
    ) {
        for (name, value) in members {
            let Some(quantity) = member_kind(name).or_else(|| {
                self.extra_members
                    .iter()
                    .any(|m| **m == **name)
                    .then_some(false)
            }) else {
                continue;
            };
            let at = |index| Place {
                resource_type,
                component,
                name,
                index,
            };
            match value {
                Json::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.element(at(Some(i)), item, quantity);
                    }
                }
                item => self.element(at(None), item, quantity),
            }
        }
    }

    fn path(&self, at: Place<'a>) -> &'a str {
        at.path(self.arena)
    }

    /// Runs `check` with the element's path (or a stand-in when nothing
    /// looks at it), then gives the findings it added their real path.
    fn checked(
        &mut self,
        at: Place<'a>,
        check: impl FnOnce(&mut Checker<'t>, &'a str, &mut Vec<Finding<'a>>),
    ) {
        let start = self.findings.len();
        let path = if self.bindings { self.path(at) } else { "" };
        check(self.checker, path, self.findings);
        if path.is_empty() && self.findings.len() > start {
            let path = self.path(at);
            for finding in &mut self.findings[start..] {
                finding.path = path;
            }
        }
    }

    fn element(&mut self, at: Place<'a>, value: &'a Json<'a>, quantity: bool) {
        let Json::Object(members) = value else {
            // A primitive `code` (a status-like element), not a coding.
            return;
        };
        if quantity {
            self.checked(at, |checker, path, findings| {
                let quantity = Quantity {
                    path,
                    system: string(members, "system"),
                    code: string(members, "code"),
                };
                checker.check_quantity(&quantity, findings);
            });
            return;
        }
        let codings: &'a [Coding<'a>] = match members.iter().find(|(k, _)| *k == "coding") {
            Some((_, Json::Array(items))) => self
                .arena
                .alloc_slice_fill_iter(items.iter().map(coding_of)),
            Some(_) => return,
            // A lone Coding (`Encounter.class`): checked, nothing can be added to it.
            None if members.iter().any(|(k, _)| *k == "system" || *k == "code") => {
                self.arena.alloc_slice_fill_iter([coding_of(value)])
            }
            // Only `text`: nothing coded.
            None => return,
        };
        let start = self.findings.len();
        self.checked(at, |checker, path, findings| {
            checker.check_concept(&Concept { path, codings }, findings);
        });
        if let Some((server, asked)) = &mut self.asked {
            let flagged = &self.findings[start..];
            for (index, coding) in codings.iter().enumerate() {
                let (Some(system), Some(code)) = (coding.system, coding.code) else {
                    continue;
                };
                if !code.is_empty()
                    && server.asks(system)
                    && !flagged.iter().any(|f| f.index == Some(index))
                {
                    asked.push(Asked {
                        place: at,
                        index,
                        coding: *coding,
                    });
                }
            }
        }
        let lone = !members.iter().any(|(k, _)| *k == "coding");
        let mut targets = Vec::new();
        if !lone
            && self
                .checker
                .map_concept(&Concept { path: "", codings }, &mut targets)
                > 0
        {
            let at = self.mapped.len();
            self.mapped.push(value);
            self.added.extend(targets.into_iter().map(|t| (at, t)));
        }
    }
}

/// Where an element is: `Type[.component[c]].name[[index]]`.
#[derive(Clone, Copy)]
struct Place<'a> {
    resource_type: &'a str,
    component: Option<usize>,
    name: &'a str,
    index: Option<usize>,
}

impl<'a> Place<'a> {
    fn path(&self, arena: &'a Bump) -> &'a str {
        let mut path = bumpalo::collections::String::new_in(arena);
        path.push_str(self.resource_type);
        if let Some(c) = self.component {
            path.push_str(".component");
            push_index(&mut path, c);
        }
        path.push('.');
        path.push_str(self.name);
        if let Some(i) = self.index {
            push_index(&mut path, i);
        }
        path.into_bump_str()
    }
}

fn push_index(path: &mut bumpalo::collections::String<'_>, index: usize) {
    use std::fmt::Write;
    let _ = write!(path, "[{index}]");
}

/// Whether a member is checked: `Some(false)` a coded element
/// ([`CHECKED_MEMBERS`]), `Some(true)` a Quantity ([`QUANTITY_MEMBERS`]).
/// A `match`, not a scan of the lists: it runs for every member of every resource.
fn member_kind(name: &str) -> Option<bool> {
    match name {
        "code"
        | "category"
        | "valueCodeableConcept"
        | "medicationCodeableConcept"
        | "reasonCode"
        | "vaccineCode"
        | "type"
        | "class" => Some(false),
        "valueQuantity" | "doseQuantity" => Some(true),
        _ => None,
    }
}

#[cfg(test)]
#[test]
fn the_match_checks_exactly_the_listed_members() {
    for name in CHECKED_MEMBERS {
        assert_eq!(member_kind(name), Some(false), "{name}");
    }
    for name in QUANTITY_MEMBERS {
        assert_eq!(member_kind(name), Some(true), "{name}");
    }
    for name in ["status", "subject", "valueString", "coding", "component"] {
        assert_eq!(member_kind(name), None, "{name}");
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
