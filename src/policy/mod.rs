//! The policy stage: one decision per resource, between decoding and rows.
//!
//! In: a parsed resource ([`Json`]) and its keys. Out: a [`Decision`] — keep
//! it, keep it changed (redaction, added labels), filter it out with a reason
//! (counted as `filtered` in the accounting), or quarantine it. Rules are
//! compiled once per job and evaluated on the decode threads on the tree the
//! decoder already built: no second parse. With no rule configured (the
//! default) the decoder does not even build that tree for types without views.
//!
//! Rules run in order; the first that does not keep the resource unchanged
//! decides. A policy file (`--policy`, [`file`]) compiles into one such rule
//! ([`rules::RuleSet`]): 42 CFR Part 2 segmentation, sensitive labels and
//! codes, minimum necessary.

pub mod codes;
pub mod compartment;
pub mod consent;
pub mod date;
pub mod edit;
pub mod file;
pub mod labels;
pub mod rules;
pub mod tree;

use std::borrow::Cow;
use std::sync::Arc;

pub use file::{Action, PolicyError, PolicySource};
pub use rules::{RuleSet, Verdict};

use crate::view::Json;

/// What the decoder already knows of the resource a rule decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    /// `meta.lastUpdated` (UTC µs), when the resource has one.
    pub last_updated: Option<i64>,
}

/// What happens to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Load it as received.
    Keep,
    /// Load this JSON instead (the same resource, changed by the rules `by`).
    Change { json: String, by: Arc<str> },
    /// Store this JSON in `_segregated/<table>`, never in the main table:
    /// the rule `by` matched.
    Segregate { json: String, by: Arc<str> },
    /// Store nothing but the accounting: counted as filtered, per reason.
    Filter { reason: Cow<'static, str> },
    /// Into `_quarantine` with this reason code and explanation.
    Quarantine { code: &'static str, reason: String },
}

/// One compiled rule.
pub trait Rule: Send + Sync + std::fmt::Debug {
    /// Decides on `resource` (whose keys the decoder has checked).
    fn decide(&self, resource: &Json<'_>, subject: &Subject<'_>) -> Decision;

    /// The policy file's rules, when this is them.
    fn as_rule_set(&self) -> Option<&RuleSet> {
        None
    }
}

/// The rules of a job, compiled once. The default has none.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Arc<dyn Rule>>,
    /// What the ledger records as the policy version ("none" without rules).
    version: Option<String>,
    /// The file it was compiled from, when it reads Consents from the lake
    /// (recompiled with them at the start of each job).
    lake_source: Option<Arc<PolicySource>>,
}

impl Policy {
    /// No rules: every resource is kept as received.
    pub fn none() -> Self {
        Self::default()
    }

    /// The policy file `spec` (a path, or `part2` / `research`), compiled;
    /// its version is the file's SHA-256.
    pub fn load(spec: &str) -> Result<Self, PolicyError> {
        let source = PolicySource::load(spec)?;
        let rules = RuleSet::compile(&source).map_err(|message| PolicyError {
            origin: source.origin.clone(),
            message,
        })?;
        let mut policy = Self::none()
            .with_rule(Arc::new(rules))
            .with_version(source.sha256.clone());
        if source.lake_consents.is_some() {
            policy.lake_source = Some(Arc::new(source));
        }
        Ok(policy)
    }

    /// The lake table this policy reads Consents from (`[consent] table`).
    pub fn lake_consents(&self) -> Option<&str> {
        self.lake_source.as_ref()?.lake_consents.as_deref()
    }

    /// This policy with the Consents read from its lake table (`text`: the
    /// table's current Consent resources as NDJSON, `origin` naming it).
    pub fn with_lake_consents(&self, origin: &str, text: &str) -> Result<Self, PolicyError> {
        let Some(source) = &self.lake_source else {
            return Ok(self.clone());
        };
        let source = source.with_consents(origin, text)?;
        let rules = RuleSet::compile(&source).map_err(|message| PolicyError {
            origin: source.origin.clone(),
            message,
        })?;
        Ok(Self::none()
            .with_rule(Arc::new(rules))
            .with_version(source.sha256))
    }

    /// The policy file's rules, if any.
    pub fn rule_set(&self) -> Option<&RuleSet> {
        self.rules.iter().find_map(|r| r.as_rule_set())
    }

    /// Whether a rule takes Encounter compartments, so a job must survey its
    /// Encounters before deciding anything ([`compartment::Survey`]).
    pub fn has_compartment_rules(&self) -> bool {
        self.rule_set().is_some_and(RuleSet::has_compartment_rules)
    }

    /// Whether the main table of `resource_type` keeps no raw JSON
    /// (`[tables.T] raw = false`): the rows store [`edit::without_raw`].
    pub fn omits_raw(&self, resource_type: &str) -> bool {
        self.rule_set().is_some_and(|r| r.omits_raw(resource_type))
    }

    /// The root elements the main table of `resource_type` keeps
    /// (`[tables.T] elements`), when the policy lists them.
    pub fn elements(&self, resource_type: &str) -> Option<&edit::Elements> {
        self.rule_set()?.elements(resource_type)
    }

    /// Whether the main table of `resource_type` keeps only listed elements.
    pub fn subsets(&self, resource_type: &str) -> bool {
        self.elements(resource_type).is_some()
    }

    /// The types whose main tables keep only listed elements, in the
    /// policy's order.
    pub fn subsetted_types(&self) -> Vec<&str> {
        self.rule_set()
            .map(|r| r.subsetted_types().collect())
            .unwrap_or_default()
    }

    /// This policy, its rules matching also by `compartments`.
    pub fn with_compartments(&self, compartments: Arc<compartment::Compartments>) -> Self {
        let mut policy = self.clone();
        for rule in &mut policy.rules {
            if let Some(rules) = rule.as_rule_set() {
                *rule = Arc::new(rules.with_compartments(compartments.clone()));
            }
        }
        policy
    }

    /// Adds a rule after the existing ones.
    pub fn with_rule(mut self, rule: Arc<dyn Rule>) -> Self {
        self.rules.push(rule);
        self
    }

    /// Names the policy in the ledger (the SHA-256 of its file, say).
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The version recorded in the manifest: "none" when there is no policy.
    pub fn version(&self) -> &str {
        self.version.as_deref().unwrap_or("none")
    }

    /// The first rule's decision that is not [`Decision::Keep`], else keep.
    pub fn decide(&self, resource: &Json<'_>, subject: &Subject<'_>) -> Decision {
        for rule in &self.rules {
            let decision = rule.decide(resource, subject);
            if decision != Decision::Keep {
                return decision;
            }
        }
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    #[derive(Debug)]
    struct FilterType(&'static str);

    impl Rule for FilterType {
        fn decide(&self, _: &Json<'_>, subject: &Subject<'_>) -> Decision {
            if subject.resource_type == self.0 {
                Decision::Filter {
                    reason: Cow::Borrowed("type not wanted"),
                }
            } else {
                Decision::Keep
            }
        }
    }

    fn keys(resource_type: &str) -> Subject<'_> {
        Subject {
            resource_type,
            id: "x",
            last_updated: None,
        }
    }

    #[test]
    fn no_rules_keep_everything_and_the_first_deciding_rule_wins() {
        let arena = Bump::new();
        let json = Json::parse(r#"{"resourceType":"Patient","id":"x"}"#, &arena).unwrap();
        assert_eq!(
            Policy::none().decide(&json, &keys("Patient")),
            Decision::Keep
        );
        assert_eq!(Policy::none().version(), "none");
        let policy = Policy::none()
            .with_rule(Arc::new(FilterType("Observation")))
            .with_rule(Arc::new(FilterType("Patient")))
            .with_version("abc");
        assert!(matches!(
            policy.decide(&json, &keys("Patient")),
            Decision::Filter { .. }
        ));
        assert_eq!(policy.decide(&json, &keys("Encounter")), Decision::Keep);
        assert_eq!(policy.version(), "abc");
    }
}
