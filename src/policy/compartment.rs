//! Encounter compartments: a segregating rule with `compartment =
//! "encounter"` also takes everything that references an Encounter it
//! segregates (an Observation of the visit, a Claim item, a DocumentReference
//! of it, a sub-encounter `partOf` it), so a 42 CFR Part 2 visit does not leak
//! into the main tables through the records made during it.
//!
//! Which Encounters those are must be known before any resource of the job
//! is decided (the Observations of a bulk export may come before its
//! Encounters): a [`Survey`] reads the Encounters the lake has segregated
//! already, then every Encounter of the job's inputs, decides each with the
//! rules, and [`Survey::finish`] gives the [`Compartments`] the rules then
//! match by. The newest version of an Encounter counts.

use std::collections::HashMap;
use std::sync::Arc;

use super::rules::RuleSet;
use super::tree;
use crate::view::Json;

/// The Encounters whose compartment a rule takes, by id.
#[derive(Debug, Default)]
pub struct Compartments {
    encounters: HashMap<Box<str>, Seed>,
    /// Those the lake had not segregated before, sorted.
    newly_segregated: Vec<Box<str>>,
}

/// The rule that took an Encounter, and why (in the tag of what follows it).
#[derive(Debug, Clone)]
struct Seed {
    rule: Arc<str>,
    why: Arc<str>,
}

impl Compartments {
    pub fn len(&self) -> usize {
        self.encounters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encounters.is_empty()
    }

    /// The Encounters taken that `_segregated/encounter` did not hold: what
    /// earlier jobs loaded of their compartments is still in the main tables.
    pub fn newly_segregated(&self) -> &[Box<str>] {
        &self.newly_segregated
    }

    /// Why `resource` is in the compartment of an Encounter `rule` took
    /// (itself, when it is one; else the first such Encounter it references
    /// anywhere, contained resources included), if it is.
    pub fn member(&self, resource: &Json<'_>, resource_type: &str, rule: &str) -> Option<String> {
        if self.encounters.is_empty() {
            return None;
        }
        if resource_type == "Encounter"
            && let Some(id) = tree::member(resource, "id").and_then(tree::string)
            && let Some(seed) = self.encounters.get(id)
            && &*seed.rule == rule
        {
            return Some(seed.why.to_string());
        }
        let mut found = None;
        for_each_encounter_reference(resource, &mut |id| {
            if found.is_none()
                && let Some(seed) = self.encounters.get(id)
                && &*seed.rule == rule
            {
                found = Some(format!("references Encounter/{id} — {}", seed.why));
            }
        });
        found
    }
}

/// Calls `f` with the id of every literal `Encounter` reference in `value`
/// (`Encounter/1`, `https://host/fhir/Encounter/1/_history/2`).
fn for_each_encounter_reference<'a>(value: &Json<'a>, f: &mut impl FnMut(&'a str)) {
    match *value {
        Json::Object(members) => {
            for (key, member) in members {
                if *key == "reference"
                    && let Json::String(reference) = *member
                    && let Some(("Encounter", id)) = tree::split_reference(reference)
                {
                    f(id);
                } else {
                    for_each_encounter_reference(member, f);
                }
            }
        }
        Json::Array(items) => {
            for item in items {
                for_each_encounter_reference(item, f);
            }
        }
        _ => {}
    }
}

/// The Encounters seen so far, newest version of each.
#[derive(Debug, Default)]
pub struct Survey {
    seen: HashMap<Box<str>, Seen>,
    /// Ids of `_segregated/encounter` (whatever they are decided now).
    lake_segregated: std::collections::HashSet<Box<str>>,
}

#[derive(Debug)]
struct Seen {
    /// `None`: undated, older than any dated version.
    last_updated: Option<i64>,
    seed: Option<Seed>,
    /// The Encounters it references (`partOf`, say).
    references: Vec<Box<str>>,
}

impl Survey {
    /// Decides the Encounter `resource` with `rules` (without compartments)
    /// and keeps it if it is the newest version seen of its id (`from_lake`:
    /// what the lake holds, which a version of the job's own wins a tie).
    pub fn observe(&mut self, rules: &RuleSet, resource: &Json<'_>, from_lake: bool) {
        self.observe_tagged(rules, resource, from_lake, None);
    }

    /// [`Survey::observe`] for a segregated row whose rule tag says `tagged`
    /// (rule, reason): when that rule and the one deciding now both take
    /// compartments, the first attribution stands (the labels a rule added
    /// would make a label rule match first now).
    pub fn observe_tagged(
        &mut self,
        rules: &RuleSet,
        resource: &Json<'_>,
        from_lake: bool,
        tagged: Option<(&str, &str)>,
    ) {
        if tree::member(resource, "resourceType").and_then(tree::string) != Some("Encounter") {
            return;
        }
        let Some(id) = tree::member(resource, "id").and_then(tree::string) else {
            return;
        };
        if from_lake {
            self.lake_segregated.insert(id.into());
        }
        let last_updated = tree::member(resource, "meta")
            .and_then(|meta| tree::member(meta, "lastUpdated"))
            .and_then(tree::string)
            .and_then(crate::fhir::parse_instant_micros);
        if let Some(before) = self.seen.get(id) {
            let newer = match from_lake {
                false => last_updated >= before.last_updated,
                true => last_updated > before.last_updated,
            };
            if !newer {
                return;
            }
        }
        let verdict = rules.evaluate(resource, "Encounter");
        let seed = verdict
            .decided_by()
            .filter(|m| rules.takes_compartment(&m.rule))
            .map(|m| {
                let (rule, why) = match tagged {
                    Some((rule, why)) if rules.takes_compartment(rule) => (rule.into(), why),
                    _ => (m.rule.clone(), m.why.as_str()),
                };
                let why = format!("Encounter/{id} is segregated by rule `{rule}`: {why}");
                Seed {
                    rule,
                    why: why.into(),
                }
            });
        let mut references = Vec::new();
        for_each_encounter_reference(resource, &mut |other| {
            if other != id {
                references.push(other.into());
            }
        });
        // Most Encounters are neither taken nor part of another: remembering
        // them would hold every Encounter id of a job. Forgetting one only
        // lets an older, taken version seen after it count (fail safe).
        if seed.is_none() && references.is_empty() {
            self.seen.remove(id);
            return;
        }
        self.seen.insert(
            id.into(),
            Seen {
                last_updated,
                seed,
                references,
            },
        );
    }

    /// Whether no Encounter is remembered (none taken, none part of another).
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The ids of the Encounters remembered.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.seen.keys().map(|id| &**id)
    }

    /// A version of Encounter `id` that no rule takes and that is part of
    /// no other Encounter: the remembered one goes if this is newer (a tie
    /// keeps it, failing safe).
    pub fn supersede(&mut self, id: &str, last_updated: Option<i64>) {
        if self
            .seen
            .get(id)
            .is_some_and(|before| last_updated > before.last_updated)
        {
            self.seen.remove(id);
        }
    }

    /// The Encounters the rules took, and those part of them (a
    /// sub-encounter of one, transitively), with the same rule.
    pub fn finish(self) -> Compartments {
        let mut encounters: HashMap<Box<str>, Seed> = self
            .seen
            .iter()
            .filter_map(|(id, seen)| Some((id.clone(), seen.seed.clone()?)))
            .collect();
        loop {
            let mut added = Vec::new();
            for (id, seen) in &self.seen {
                if encounters.contains_key(id) {
                    continue;
                }
                if let Some((parent, seed)) = seen
                    .references
                    .iter()
                    .find_map(|r| Some((r, encounters.get(r)?)))
                {
                    let why = format!(
                        "Encounter/{id} is part of Encounter/{parent} — {}",
                        seed.why
                    );
                    added.push((
                        id.clone(),
                        Seed {
                            rule: seed.rule.clone(),
                            why: why.into(),
                        },
                    ));
                }
            }
            if added.is_empty() {
                break;
            }
            encounters.extend(added);
        }
        let mut newly_segregated: Vec<Box<str>> = encounters
            .keys()
            .filter(|id| !self.lake_segregated.contains(*id))
            .cloned()
            .collect();
        newly_segregated.sort();
        Compartments {
            encounters,
            newly_segregated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::file::PolicySource;
    use bumpalo::Bump;

    const POLICY: &str = r#"
        [valuesets.sud]
        codes = ["http://snomed.info/sct|445273005"]
        [[rule]]
        name = "sud"
        action = "segregate"
        codes = ["sud"]
        compartment = "encounter"
    "#;

    fn rules() -> RuleSet {
        RuleSet::compile(&PolicySource::parse("test", POLICY, None).unwrap()).unwrap()
    }

    fn encounter(id: &str, updated: &str, sud: bool, part_of: Option<&str>) -> String {
        let reason = match sud {
            true => {
                r#","reasonCode":[{"coding":[{"system":"http://snomed.info/sct","code":"445273005"}]}]"#
            }
            false => "",
        };
        let part_of = part_of
            .map(|p| format!(r#","partOf":{{"reference":"Encounter/{p}"}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"resourceType":"Encounter","id":"{id}","meta":{{"lastUpdated":"{updated}"}}{reason}{part_of}}}"#
        )
    }

    fn survey(texts: &[(&str, bool)]) -> Compartments {
        let rules = rules();
        let mut survey = Survey::default();
        for (text, from_lake) in texts {
            let arena = Bump::new();
            survey.observe(&rules, &Json::parse(text, &arena).unwrap(), *from_lake);
        }
        survey.finish()
    }

    fn member(compartments: &Compartments, text: &str) -> Option<String> {
        let arena = Bump::new();
        let json = Json::parse(text, &arena).unwrap();
        let kind = tree::member(&json, "resourceType")
            .and_then(tree::string)
            .unwrap();
        compartments.member(&json, kind, "sud")
    }

    #[test]
    fn what_references_a_segregated_encounter_anywhere_is_in_its_compartment() {
        let c = survey(&[
            (&encounter("e1", "2024-01-01T00:00:00Z", true, None), false),
            (&encounter("e2", "2024-01-01T00:00:00Z", false, None), false),
        ]);
        assert_eq!(c.len(), 1);
        let why = member(
            &c,
            r#"{"resourceType":"Observation","encounter":{"reference":"Encounter/e1"}}"#,
        )
        .unwrap();
        assert!(
            why.starts_with(
                "references Encounter/e1 — Encounter/e1 is segregated by rule `sud`: code 445273005"
            ),
            "{why}"
        );
        for text in [
            r#"{"resourceType":"DocumentReference","context":{"encounter":[{"reference":"https://h/fhir/Encounter/e1/_history/3"}]}}"#,
            r#"{"resourceType":"Claim","item":[{"sequence":1},{"encounter":[{"reference":"Encounter/e1"}]}]}"#,
            r#"{"resourceType":"Encounter","id":"e1"}"#,
        ] {
            assert!(member(&c, text).is_some(), "{text}");
        }
        for text in [
            r#"{"resourceType":"Observation","encounter":{"reference":"Encounter/e2"}}"#,
            r#"{"resourceType":"Observation","encounter":{"reference":"urn:uuid:e1"}}"#,
            r#"{"resourceType":"Observation","note":[{"text":"Encounter/e1"}]}"#,
            r#"{"resourceType":"Observation","subject":{"reference":"Patient/e1"}}"#,
        ] {
            assert_eq!(member(&c, text), None, "{text}");
        }
        let other_rule = {
            let arena = Bump::new();
            let json =
                Json::parse(r#"{"encounter":{"reference":"Encounter/e1"}}"#, &arena).unwrap();
            c.member(&json, "Observation", "another-rule")
        };
        assert_eq!(other_rule, None);
    }

    #[test]
    fn sub_encounters_follow_their_parent_transitively() {
        let c = survey(&[
            (
                &encounter("child", "2024-01-01T00:00:00Z", false, Some("mid")),
                false,
            ),
            (
                &encounter("mid", "2024-01-01T00:00:00Z", false, Some("root")),
                false,
            ),
            (
                &encounter("root", "2024-01-01T00:00:00Z", true, None),
                false,
            ),
            (
                &encounter("other", "2024-01-01T00:00:00Z", false, Some("nowhere")),
                false,
            ),
        ]);
        assert_eq!(c.len(), 3);
        assert_eq!(c.newly_segregated().len(), 3);
        let why = member(&c, r#"{"resourceType":"Encounter","id":"child"}"#).unwrap();
        assert!(
            why.starts_with(
                "Encounter/child is part of Encounter/mid — Encounter/mid is part of Encounter/root"
            ),
            "{why}"
        );
    }

    #[test]
    fn only_the_newest_version_counts_and_the_jobs_own_wins_a_tie() {
        let lake_sud = encounter("e1", "2024-01-01T00:00:00Z", true, None);
        let newer_plain = encounter("e1", "2024-02-01T00:00:00Z", false, None);
        let older_plain = encounter("e1", "2023-12-01T00:00:00Z", false, None);
        let same_plain = encounter("e1", "2024-01-01T00:00:00Z", false, None);
        // The lake is surveyed before the job's inputs.
        assert!(survey(&[(&lake_sud, true), (&newer_plain, false)]).is_empty());
        let kept = survey(&[(&lake_sud, true), (&older_plain, false)]);
        assert_eq!(kept.len(), 1);
        assert!(kept.newly_segregated().is_empty());
        assert!(survey(&[(&lake_sud, true), (&same_plain, false)]).is_empty());
        let job_sud = encounter("e1", "2024-01-01T00:00:00Z", true, None);
        assert_eq!(survey(&[(&older_plain, false), (&job_sud, false)]).len(), 1);
        // A plain version is forgotten: an older taken one after it counts
        // (fails safe: more is segregated, never less).
        assert_eq!(survey(&[(&newer_plain, false), (&job_sud, false)]).len(), 1);
    }
}
