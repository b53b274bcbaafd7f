//! Consent directives: R4 `Consent` resources, compiled per patient, and
//! whether one denies the lake's purpose for a resource.
//!
//! In: NDJSON of Consent resources (a policy's `[consent] file`) and the
//! lake's purpose of use (`[consent] purpose`, a v3-ActReason code such as
//! `HRESCH`). Out: per patient id, the active Consents' provisions; per
//! resource of a patient's compartment, the Consent that denies it, if any.
//!
//! A provision applies when its `purpose` is empty or names the lake's
//! purpose, its `class` is empty or names the resource's type, and the
//! resource's date lies in its `dataPeriod` (else `period`). The root
//! provision's `type` is the base rule; nested provisions that apply
//! override it, the last one winning (FHIR's exceptions). A resource
//! without a date is never inside a dated provision: a permit limited to
//! dates does not reach it, a deny limited to dates does. Any active Consent
//! that denies decides. A Consent whose provisions cannot be read denies
//! everything of its patient (fail closed); one without a readable patient
//! stops the policy from loading.

use std::collections::HashMap;

use bumpalo::Bump;

use super::date::{self, DayRange, Overlap};
use super::tree::{self, member};
use crate::view::Json;

#[derive(Debug, Clone)]
struct Provision {
    deny: bool,
    purposes: Vec<Box<str>>,
    classes: Vec<Box<str>>,
    /// `actor.reference`s (`Organization/x`): the provision is about them only.
    actors: Vec<Box<str>>,
    period: Option<DayRange>,
    nested: Vec<Provision>,
}

#[derive(Debug, Clone)]
struct Directive {
    id: Box<str>,
    /// `Err`: unreadable, denies everything (the reason).
    root: Result<Provision, String>,
}

/// The active Consents of a policy, by patient id.
#[derive(Debug, Default)]
pub struct Consents {
    purpose: Box<str>,
    /// Who the lake's data goes to (`[consent] actor`), if the policy says.
    actor: Option<Box<str>>,
    by_patient: HashMap<Box<str>, Vec<Directive>>,
    pub origin: String,
}

impl Consents {
    pub fn parse(
        origin: &str,
        text: &str,
        purpose: &str,
        actor: Option<&str>,
    ) -> Result<Consents, String> {
        let mut consents = Consents {
            purpose: purpose.into(),
            actor: actor.map(Into::into),
            by_patient: HashMap::new(),
            origin: origin.to_owned(),
        };
        let arena = Bump::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |m: &str| format!("{origin}:{}: {m}", n + 1);
            let json = Json::parse(line, &arena).map_err(|e| at(&format!("not JSON ({e})")))?;
            if member(&json, "resourceType").and_then(tree::string) != Some("Consent") {
                return Err(at("not a Consent resource"));
            }
            let id = member(&json, "id").and_then(tree::string).unwrap_or("?");
            let patient = member(&json, "patient")
                .map(|p| tree::reference_to(p, "Patient"))
                .transpose()
                .ok()
                .flatten()
                .flatten()
                .ok_or_else(|| {
                    at(&format!(
                        "Consent/{id} has no Patient reference; fix or remove it"
                    ))
                })?;
            match member(&json, "status").and_then(tree::string) {
                Some("active") => {}
                Some(_) => continue,
                None => return Err(at(&format!("Consent/{id} has no status"))),
            }
            let root = match member(&json, "provision") {
                Some(p) => provision(p, None),
                None => Err("it has no provision".to_owned()),
            };
            consents
                .by_patient
                .entry(patient.into())
                .or_default()
                .push(Directive {
                    id: id.into(),
                    root,
                });
        }
        Ok(consents)
    }

    pub fn len(&self) -> usize {
        self.by_patient.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_patient.is_empty()
    }

    /// Whether `patient` has an active Consent.
    pub fn covers(&self, patient: &str) -> bool {
        self.by_patient.contains_key(patient)
    }

    /// Why a Consent of `patient` denies a resource of `resource_type` on
    /// `day` for the lake's purpose; `None` when none does.
    pub fn denial(
        &self,
        patient: &str,
        resource_type: &str,
        day: Option<DayRange>,
    ) -> Option<String> {
        for directive in self.by_patient.get(patient)? {
            let provision = match &directive.root {
                Ok(p) => p,
                Err(why) => {
                    return Some(format!(
                        "Consent/{} cannot be read ({why}): denied",
                        directive.id
                    ));
                }
            };
            if self.decide(provision, resource_type, day) == Some(true) {
                return Some(format!(
                    "Consent/{} denies purpose {} for Patient/{patient}",
                    directive.id, self.purpose
                ));
            }
        }
        None
    }

    /// The outcome under `provision` and its exceptions (`None`: it does
    /// not apply).
    fn decide(
        &self,
        provision: &Provision,
        resource_type: &str,
        day: Option<DayRange>,
    ) -> Option<bool> {
        let purpose_ok =
            provision.purposes.is_empty() || provision.purposes.contains(&self.purpose);
        let class_ok =
            provision.classes.is_empty() || provision.classes.iter().any(|c| &**c == resource_type);
        // Scoped to actors: it is about the lake when the lake's actor is one
        // of them. A lake that names none cannot tell, so a deny applies
        // (fail closed) and a permit does not.
        let actor_ok = provision.actors.is_empty()
            || match &self.actor {
                Some(me) => provision.actors.contains(me),
                None => provision.deny,
            };
        let period_ok = match (provision.period, day) {
            (None, _) => true,
            (Some(period), Some(day)) => day.within(&period) == Overlap::Within,
            (Some(_), None) => false,
        };
        if !(purpose_ok && class_ok && actor_ok && period_ok) {
            return None;
        }
        let mut outcome = provision.deny;
        for inner in &provision.nested {
            if let Some(o) = self.decide(inner, resource_type, day) {
                outcome = o;
            }
        }
        Some(outcome)
    }
}

/// A provision; a nested one without a `type` is an exception to its
/// parent (`parent`: whether the parent denies).
fn provision(value: &Json<'_>, parent: Option<bool>) -> Result<Provision, String> {
    let deny = match (member(value, "type").and_then(tree::string), parent) {
        (Some("deny"), _) => true,
        (Some("permit"), _) => false,
        (None, Some(parent_denies)) => !parent_denies,
        (other, _) => return Err(format!("provision.type is {other:?}, not deny or permit")),
    };
    let codes = |key: &str| -> Result<Vec<Box<str>>, String> {
        let mut out = Vec::new();
        if let Some(list) = member(value, key) {
            for coding in tree::items(list) {
                match member(coding, "code").and_then(tree::string) {
                    Some(code) => out.push(code.into()),
                    None => return Err(format!("a provision {key} has no code")),
                }
            }
        }
        Ok(out)
    };
    let period = match member(value, "dataPeriod").or_else(|| member(value, "period")) {
        None => None,
        Some(p) => {
            let end = |key: &str| -> Result<Option<DayRange>, String> {
                member(p, key)
                    .map(|v| {
                        tree::string(v)
                            .and_then(date::parse)
                            .ok_or_else(|| format!("provision period {key} is not a date"))
                    })
                    .transpose()
            };
            let (start, end) = (end("start")?, end("end")?);
            Some(DayRange {
                first: start.map_or(date::Day::MIN, |d| d.first),
                last: end.map_or(date::Day::MAX, |d| d.last),
            })
        }
    };
    let mut actors = Vec::new();
    if let Some(list) = member(value, "actor") {
        for actor in tree::items(list) {
            match member(actor, "reference")
                .and_then(|r| member(r, "reference"))
                .and_then(tree::string)
            {
                Some(reference) => actors.push(reference.into()),
                None => return Err("a provision actor has no reference".into()),
            }
        }
    }
    let mut nested = Vec::new();
    if let Some(list) = member(value, "provision") {
        for inner in tree::items(list) {
            nested.push(provision(inner, Some(deny))?);
        }
    }
    Ok(Provision {
        deny,
        purposes: codes("purpose")?,
        classes: codes("class")?,
        actors,
        period,
        nested,
    })
}

/// The patient a resource belongs to: a Patient's own id, else the Patient
/// its `subject`, `patient` or `beneficiary` references.
pub fn patient_of<'a>(resource: &'a Json<'a>, resource_type: &str) -> Option<&'a str> {
    if resource_type == "Patient" {
        return member(resource, "id").and_then(tree::string);
    }
    ["subject", "patient", "beneficiary"]
        .iter()
        .find_map(|key| {
            let value = member(resource, key)?;
            tree::reference_to(value, "Patient").ok().flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSENTS: &str = r#"{"resourceType":"Consent","id":"opt-out","status":"active","patient":{"reference":"Patient/p1"},"provision":{"type":"deny","purpose":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"HRESCH"}]}}
{"resourceType":"Consent","id":"since-2015","status":"active","patient":{"reference":"Patient/p2"},"provision":{"type":"deny","provision":[{"type":"permit","dataPeriod":{"start":"2015-01-01"}}]}}
{"resourceType":"Consent","id":"treatment-only","status":"active","patient":{"reference":"Patient/p3"},"provision":{"type":"deny","purpose":[{"code":"TREAT"}]}}
{"resourceType":"Consent","id":"old","status":"inactive","patient":{"reference":"Patient/p4"},"provision":{"type":"deny"}}
{"resourceType":"Consent","id":"broken","status":"active","patient":{"reference":"Patient/p5"},"provision":{"type":"maybe"}}
"#;

    #[test]
    fn a_provision_about_actors_is_about_the_lake_only_when_it_names_the_lakes_actor() {
        let text = r#"{"resourceType":"Consent","id":"not-to-acme","status":"active","patient":{"reference":"Patient/p1"},"provision":{"type":"deny","actor":[{"role":{"coding":[{"code":"IRCP"}]},"reference":{"reference":"Organization/acme"}}]}}
{"resourceType":"Consent","id":"only-to-uni","status":"active","patient":{"reference":"Patient/p2"},"provision":{"type":"deny","provision":[{"type":"permit","actor":[{"reference":{"reference":"Organization/uni"}}]}]}}
{"resourceType":"Consent","id":"no-ref","status":"active","patient":{"reference":"Patient/p3"},"provision":{"type":"deny","actor":[{"role":{"text":"x"}}]}}
"#;
        let as_of = |actor| Consents::parse("c", text, "HRESCH", actor).unwrap();
        let day = date::parse("2020-01-01");
        let acme = as_of(Some("Organization/acme"));
        let uni = as_of(Some("Organization/uni"));
        let unnamed = as_of(None);
        assert!(acme.denial("p1", "Observation", day).is_some());
        assert!(
            uni.denial("p1", "Observation", day).is_none(),
            "the deny is about acme"
        );
        assert!(
            unnamed.denial("p1", "Observation", day).is_some(),
            "fail closed"
        );
        assert!(
            uni.denial("p2", "Observation", day).is_none(),
            "permitted to uni"
        );
        assert!(acme.denial("p2", "Observation", day).is_some());
        assert!(
            unnamed.denial("p2", "Observation", day).is_some(),
            "a permit for someone named"
        );
        let unreadable = unnamed.denial("p3", "Patient", None).unwrap();
        assert!(unreadable.contains("no reference"), "{unreadable}");
    }

    #[test]
    fn provisions_deny_by_purpose_and_permit_after_a_date() {
        let consents = Consents::parse("c.ndjson", CONSENTS, "HRESCH", None).unwrap();
        assert_eq!(consents.len(), 4);
        let day = |d: &str| date::parse(d);
        let denial = consents
            .denial("p1", "Observation", day("2020-01-01"))
            .unwrap();
        assert_eq!(
            denial,
            "Consent/opt-out denies purpose HRESCH for Patient/p1"
        );
        assert!(consents.denial("p1", "Patient", None).is_some());
        assert!(
            consents
                .denial("p2", "Encounter", day("2014-12-31"))
                .is_some()
        );
        assert!(
            consents
                .denial("p2", "Encounter", day("2015-01-01"))
                .is_none()
        );
        assert!(
            consents.denial("p2", "Encounter", None).is_some(),
            "no date: not inside the permit"
        );
        assert!(
            consents
                .denial("p3", "Condition", day("2020-01-01"))
                .is_none(),
            "another purpose"
        );
        assert!(
            consents.denial("p4", "Condition", None).is_none(),
            "inactive"
        );
        assert!(
            consents
                .denial("p5", "Condition", None)
                .unwrap()
                .contains("cannot be read")
        );
        assert!(consents.denial("nobody", "Condition", None).is_none());
    }

    #[test]
    fn consents_without_a_patient_stop_the_policy() {
        let e = Consents::parse(
            "c.ndjson",
            "{\"resourceType\":\"Consent\",\"id\":\"x\",\"status\":\"active\"}\n",
            "HRESCH",
            None,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "c.ndjson:1: Consent/x has no Patient reference; fix or remove it"
        );
        assert!(Consents::parse("c", "{\"resourceType\":\"Patient\"}\n", "HRESCH", None).is_err());
    }

    #[test]
    fn patients_of_resources() {
        let arena = Bump::new();
        let of = |t: &str, text: &str| {
            let json = Json::parse(text, &arena).unwrap();
            let json: &Json<'_> = arena.alloc(json);
            patient_of(json, t).map(str::to_owned)
        };
        assert_eq!(of("Patient", r#"{"id":"p"}"#).as_deref(), Some("p"));
        assert_eq!(
            of("Observation", r#"{"subject":{"reference":"Patient/p"}}"#).as_deref(),
            Some("p")
        );
        assert_eq!(
            of("Claim", r#"{"patient":{"reference":"Patient/q"}}"#).as_deref(),
            Some("q")
        );
        assert_eq!(
            of("Observation", r#"{"subject":{"reference":"Group/g"}}"#),
            None
        );
    }
}
