//! The Encounter survey a policy with compartment rules needs before a job
//! decides anything (`policy::compartment`): the Encounters the lake has
//! segregated, then those of the job's inputs, read once more ahead of the
//! decode pass. Only inputs that can hold Encounters are read (an
//! `Observation.ndjson` is skipped), and only lines naming `"Encounter"` are
//! parsed.

use std::io::BufRead;
use std::sync::Arc;

use bumpalo::Bump;

use super::{Input, InputRole, LoadError};
use crate::lake::Lake;
use crate::policy::compartment::Survey;
use crate::policy::{Policy, RuleSet, edit};
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
        for input in inputs.iter().filter(|i| may_hold_encounters(i)) {
            survey_input(input, &rules, &mut survey)?;
        }
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

/// Adds the Encounters of one input to `survey`. Lines that do not parse
/// are the decode pass's to quarantine.
pub fn survey_input(input: &Input, rules: &RuleSet, survey: &mut Survey) -> Result<(), LoadError> {
    let read_err = |source| LoadError::Read {
        path: input.name.clone(),
        source,
    };
    let reader = std::io::BufReader::with_capacity(256 * 1024, input.open().map_err(read_err)?);
    let encounter = memchr::memmem::Finder::new(b"\"Encounter\"");
    let mut arena = Bump::new();
    for line in reader.split(b'\n') {
        let line = line.map_err(read_err)?;
        if encounter.find(&line).is_none() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            continue;
        };
        arena.reset();
        if let Ok(json) = Json::parse(text, &arena) {
            survey.observe(rules, &json, false);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::SourceKind;

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
