//! The Encounter survey a policy with compartment rules needs before a job
//! decides anything (`policy::compartment`): the Encounters the lake has
//! segregated, then those of the job's inputs, read once more ahead of the
//! decode pass. Only inputs that can hold Encounters are read (an
//! `Observation.ndjson` is skipped), and only lines naming `"Encounter"`
//! whose raw text leaves open that a rule takes them are parsed.

use std::collections::HashSet;
use std::io::BufRead;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use bumpalo::Bump;
use memchr::memmem;

use super::{Input, InputRole, LoadError};
use crate::lake::Lake;
use crate::policy::codes::normalise;
use crate::policy::compartment::Survey;
use crate::policy::{Policy, RuleSet, edit, tree};
use crate::view::Json;

/// `policy` matching also by the compartments of the Encounters it
/// segregates in `lake` and `inputs` (the policy itself without such rules),
/// and a warning when Encounters are segregated for the first time in a lake
/// that held Encounters already: what earlier jobs loaded of their
/// compartments is still in the main tables.
pub async fn with_compartments(
    lake: &Lake,
    inputs: &[Input],
    policy: &Policy,
) -> Result<(Policy, Option<String>), LoadError> {
    let Some(rules) = policy.rule_set().filter(|r| r.has_compartment_rules()) else {
        return Ok((policy.clone(), None));
    };
    let mut survey = Survey::default();
    survey_lake(lake, rules, &mut survey).await?;
    let rules = Arc::new(rules.clone());
    let inputs = inputs.to_vec();
    let survey = tokio::task::spawn_blocking(move || {
        let surveyed = inputs.iter().filter(|i| may_hold_encounters(i));
        survey_inputs(surveyed, &rules, &mut survey)?;
        Ok::<_, LoadError>(survey)
    })
    .await
    .expect("the Encounter survey does not panic")?;
    let compartments = survey.finish();
    let newly = compartments.newly_segregated();
    let warning = match newly.first() {
        Some(first)
            if lake
                .has_table(&crate::fhir::table_name("Encounter"))
                .await? =>
        {
            Some(format!(
                "policy: {} Encounter(s) segregated for the first time (e.g. Encounter/{first}) take \
             their compartments from this job on; resources earlier jobs loaded that reference \
             them stay in the main tables until `fhirlake policy apply` moves them",
                newly.len()
            ))
        }
        _ => None,
    };
    Ok((policy.with_compartments(Arc::new(compartments)), warning))
}

/// Adds the Encounters of `_segregated/encounter` (as the policy sees them
/// again: without the rule tag) to `survey`.
pub async fn survey_lake(
    lake: &Lake,
    rules: &RuleSet,
    survey: &mut Survey,
) -> Result<(), LoadError> {
    let table = crate::fhir::segregated_table("Encounter");
    let mut arena = Bump::new();
    for (last_updated, text) in crate::lake::current_rows(lake, &table).await? {
        arena.reset();
        observe_stored(rules, survey, &text, last_updated, true, &arena);
    }
    Ok(())
}

/// Observes one stored row (`last_updated`: its `meta_last_updated`).
pub fn observe_stored(
    rules: &RuleSet,
    survey: &mut Survey,
    text: &str,
    last_updated: i64,
    from_lake: bool,
    arena: &Bump,
) {
    // A row that does not parse was quarantined or fails closed elsewhere.
    let Ok(stored) = Json::parse(text, arena) else {
        return;
    };
    let tagged = edit::rule_tag(&stored);
    match edit::restored(&stored, &crate::fhir::instant_text(last_updated)) {
        Some(restored) => {
            let arena = Bump::new();
            if let Ok(json) = Json::parse(&restored, &arena) {
                survey.observe_tagged(rules, &json, from_lake, tagged);
            }
        }
        None => survey.observe_tagged(rules, &stored, from_lake, tagged),
    }
}

fn may_hold_encounters(input: &Input) -> bool {
    input.role == InputRole::Resources && matches!(input.expected_type, None | Some("Encounter"))
}

/// Adds the Encounters of `inputs` to `survey`. Lines that do not parse
/// are the decode pass's to quarantine.
///
/// Most Encounters are neither taken by a rule nor part of another, and a
/// look at the raw line tells ([`Prefilter`]): only the others are parsed
/// and decided. A version skipped so is then looked at again only if it
/// names an Encounter the survey remembers, to supersede an older version
/// of it that a rule took.
pub fn survey_inputs<'a>(
    inputs: impl Iterator<Item = &'a Input> + Clone,
    rules: &RuleSet,
    survey: &mut Survey,
) -> Result<(), LoadError> {
    let prefilter = Prefilter::new(rules);
    let mut arena = Bump::new();
    let mut skipped = false;
    for input in inputs.clone() {
        for_each_encounter_line(input, &mut |text| {
            if !prefilter.may_matter(text.as_bytes()) {
                skipped = true;
                return;
            }
            arena.reset();
            if let Ok(json) = Json::parse(text, &arena) {
                survey.observe(rules, &json, false);
            }
        })?;
    }
    if !skipped || survey.is_empty() {
        return Ok(());
    }
    let remembered = AhoCorasick::new(survey.ids()).expect("ids make an automaton");
    let mut superseding: Vec<(Box<str>, Option<i64>)> = Vec::new();
    for input in inputs {
        for_each_encounter_line(input, &mut |text| {
            if !remembered.is_match(text) || prefilter.may_matter(text.as_bytes()) {
                return;
            }
            arena.reset();
            let Ok(json) = Json::parse(text, &arena) else {
                return;
            };
            if text_of(&json, "resourceType") != Some("Encounter") {
                return;
            }
            if let Some(id) = text_of(&json, "id") {
                let last_updated = tree::member(&json, "meta")
                    .and_then(|meta| text_of(meta, "lastUpdated"))
                    .and_then(crate::fhir::parse_instant_micros);
                superseding.push((id.into(), last_updated));
            }
        })?;
    }
    for (id, last_updated) in superseding {
        survey.supersede(&id, last_updated);
    }
    Ok(())
}

fn text_of<'a>(value: &Json<'a>, key: &str) -> Option<&'a str> {
    tree::member(value, key).and_then(tree::string)
}

/// Calls `f` with each UTF-8 line of `input` that names `"Encounter"`.
fn for_each_encounter_line(input: &Input, f: &mut impl FnMut(&str)) -> Result<(), LoadError> {
    let read_err = |source| LoadError::Read {
        path: input.name.clone(),
        source,
    };
    let reader = std::io::BufReader::with_capacity(256 * 1024, input.open().map_err(read_err)?);
    let encounter = memmem::Finder::new(b"\"Encounter\"");
    for line in reader.split(b'\n') {
        let line = line.map_err(read_err)?;
        if encounter.find(&line).is_none() {
            continue;
        }
        if let Ok(text) = std::str::from_utf8(&line) {
            f(text);
        }
    }
    Ok(())
}

/// What the raw text of a line says for certain: that no compartment rule
/// can take the Encounter and that it references no other Encounter. A rule
/// matches by labels and codes, both Codings, so only the strings of
/// `"code":"…"` members can trigger one; they are compared, normalised,
/// with every code such a rule matches on. A line this cannot read so
/// simply (an escape that could hide a code, a space before a colon) may
/// matter, and is parsed.
struct Prefilter {
    codes: HashSet<Box<str>>,
    code: memmem::Finder<'static>,
    reference: memmem::Finder<'static>,
}

impl Prefilter {
    fn new(rules: &RuleSet) -> Self {
        Prefilter {
            codes: rules.compartment_codes(),
            code: memmem::Finder::new(b"\"code\""),
            reference: memmem::Finder::new(b"Encounter/"),
        }
    }

    /// `false`: certainly neither taken nor part of another Encounter.
    fn may_matter(&self, line: &[u8]) -> bool {
        if self.reference.find(line).is_some()
            || memmem::find(line, b"\\u").is_some()
            || memmem::find(line, b"\\/").is_some()
        {
            return true;
        }
        let mut buffer = [0u8; 64];
        for at in self.code.find_iter(line) {
            match &line[at + b"\"code\"".len()..] {
                [b':', b'"', value @ ..] => {
                    let Some(end) = memchr::memchr(b'"', value) else {
                        return true;
                    };
                    let value = &value[..end];
                    if value.ends_with(b"\\") {
                        return true;
                    }
                    let Ok(code) = std::str::from_utf8(value) else {
                        return true;
                    };
                    // Too long to normalise: no set holds it (as the lookup).
                    if normalise(code, &mut buffer).is_some_and(|c| self.codes.contains(c)) {
                        return true;
                    }
                }
                // A CodeableConcept named `code`, or the string "code".
                [b':', b'{' | b'[', ..] | [b',' | b'}' | b']', ..] => {}
                _ => return true,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::SourceKind;

    const POLICY: &str = r#"
        [valuesets.sud]
        codes = ["http://hl7.org/fhir/sid/icd-10-cm|F10.20"]
        [[rule]]
        name = "sud"
        action = "segregate"
        codes = ["sud"]
        labels = ["42CFRPart2"]
        compartment = "encounter"
    "#;

    fn rules() -> RuleSet {
        let source = crate::policy::PolicySource::parse("test", POLICY, None).unwrap();
        RuleSet::compile(&source).unwrap()
    }

    #[test]
    fn the_prefilter_skips_only_lines_no_compartment_rule_can_take() {
        let prefilter = Prefilter::new(&rules());
        let plain = r#"{"resourceType":"Encounter","id":"e","class":{"code":"AMB"},"type":[{"coding":[{"system":"http://snomed.info/sct","code":"185349003"}]}],"subject":{"reference":"Patient/p"}}"#;
        assert!(!prefilter.may_matter(plain.as_bytes()));
        for (line, why) in [
            (
                plain.replace("185349003", "f1020"),
                "a set's code, normalised",
            ),
            (plain.replace("185349003", "F10.20"), "a set's code"),
            (plain.replace("\"AMB\"", "\"42CFRPart2\""), "a label's code"),
            (
                plain.replace("Patient/p", "Encounter/parent"),
                "part of another",
            ),
            (plain.replace("185349003", "F10\\u002e20"), "an escape"),
            (
                plain.replace("\"code\":\"AMB\"", "\"code\" : \"AMB\""),
                "a space",
            ),
            (
                plain.replace("\"code\":\"AMB\"", "\"code\":303.0"),
                "a number",
            ),
        ] {
            assert!(prefilter.may_matter(line.as_bytes()), "{why}: {line}");
        }
        // The string "code" and a CodeableConcept named code are no codes.
        let other = plain.replace(
            "\"class\":{\"code\":\"AMB\"}",
            "\"x\":\"code\",\"code\":{\"text\":\"y\"}",
        );
        assert!(!prefilter.may_matter(other.as_bytes()), "{other}");
    }

    fn encounter(id: &str, updated: &str, sud: bool) -> String {
        let code = if sud { "F10.20" } else { "Z00.00" };
        format!(
            r#"{{"resourceType":"Encounter","id":"{id}","meta":{{"lastUpdated":"{updated}"}},"reasonCode":[{{"coding":[{{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"{code}"}}]}}]}}"#
        )
    }

    fn input(name: &str, lines: &[String]) -> Input {
        let text = lines.join("\n") + "\n";
        Input::memory(name.into(), SourceKind::Files, text.into_bytes().into())
    }

    #[test]
    fn a_newer_version_no_rule_takes_supersedes_a_taken_one_even_unparsed() {
        let rules = rules();
        let taken = |inputs: &[Input]| {
            let mut survey = Survey::default();
            survey_inputs(inputs.iter(), &rules, &mut survey).unwrap();
            let compartments = survey.finish();
            let mut ids: Vec<String> = (0..3)
                .map(|n| format!("e{n}"))
                .filter(|id| {
                    let line = format!(r#"{{"resourceType":"Observation","encounter":{{"reference":"Encounter/{id}"}}}}"#);
                    let arena = Bump::new();
                    let json = Json::parse(&line, &arena).unwrap();
                    compartments.member(&json, "Observation", "sud").is_some()
                })
                .collect();
            ids.sort();
            ids
        };
        let old = "2024-01-01T00:00:00Z";
        let new = "2024-02-01T00:00:00Z";
        // e0 taken then cleared in a later file; e1 cleared by an older
        // version only; e2 taken and a tie (kept: fail safe).
        let inputs = [
            input(
                "a",
                &[
                    encounter("e0", old, true),
                    encounter("e1", new, true),
                    encounter("e2", old, true),
                ],
            ),
            input(
                "b",
                &[
                    encounter("e0", new, false),
                    encounter("e1", old, false),
                    encounter("e2", old, false),
                ],
            ),
        ];
        assert_eq!(taken(&inputs), ["e1", "e2"]);
        // The same versions in the other order of files.
        let inputs = [inputs[1].clone(), inputs[0].clone()];
        assert_eq!(taken(&inputs), ["e1", "e2"]);
    }

    #[test]
    fn only_inputs_that_can_hold_encounters_are_surveyed() {
        let input = |name: &str| Input::memory(name.into(), SourceKind::Files, Default::default());
        assert!(may_hold_encounters(&input("Encounter.000.ndjson")));
        assert!(may_hold_encounters(&input("everything.ndjson")));
        assert!(!may_hold_encounters(&input("Observation.000.ndjson")));
        assert!(!may_hold_encounters(
            &input("log.ndjson").with_role(InputRole::ExportLog)
        ));
    }
}
