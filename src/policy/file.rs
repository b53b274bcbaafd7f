//! Policy files: the rules a site writes, read strictly.
//!
//! In: `--policy NAME_OR_FILE` — a TOML file, or the name of a policy
//! fhirlake ships (`part2`, `research`; `data/policy/`). Out: a
//! [`PolicyText`] whose every field was known (`deny_unknown_fields`: a
//! misspelt key is an error, not a rule silently ignored), its value sets
//! read, and its version: the SHA-256 of the file's bytes (then the bytes of
//! its `[consent] file`, when it has one), which the manifest and the audit
//! events record as the consent directive version.
//!
//! ```toml
//! name = "site"
//! [valuesets.local-sud]            # fhirlake's TSV format, beside the policy
//! file = "local-sud.tsv"
//! [valuesets.hiv]                  # or inline, system|code
//! codes = ["http://snomed.info/sct|86406008"]
//! [[rule]]
//! name = "part2"
//! action = "segregate"             # allow | label | redact | segregate | deny
//! labels = ["42CFRPart2", "SUD"]   # any of these in meta.security ...
//! codes = ["cms-bfd-samhsa"]       # ... or any code of these sets
//! types = ["Condition"]            # only these types (default: all)
//! add_labels = ["42CFRPart2"]      # label, segregate: labels added
//! paths = ["name"]                 # redact: elements removed
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::codes::{BUILTIN, ValueSet};

/// The policies fhirlake ships, by name.
pub const BUILTIN_POLICIES: &[(&str, &str)] = &[
    ("part2", include_str!("../../data/policy/part2.toml")),
    ("research", include_str!("../../data/policy/research.toml")),
];

/// What a rule does to a resource it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Keep it as it is now; later rules are not asked.
    Allow,
    /// Add `add_labels` to `meta.security`; later rules still run.
    Label,
    /// Remove `paths` and tag it `REDACTED`; later rules still run.
    Redact,
    /// Store it in `_segregated/<table>`, never in the main table.
    Segregate,
    /// Store nothing but the accounting.
    Deny,
}

impl Action {
    /// Decides: no later rule is asked.
    pub fn is_final(self) -> bool {
        matches!(self, Action::Allow | Action::Segregate | Action::Deny)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Label => "label",
            Action::Redact => "redact",
            Action::Segregate => "segregate",
            Action::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    pub name: Option<String>,
    #[serde(default)]
    pub valuesets: BTreeMap<String, ValueSetText>,
    /// Per resource type, the elements holding its codes (replacing the
    /// defaults of that type).
    #[serde(default)]
    pub code_paths: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleText>,
    /// The Consents rules with `consent = true` ask.
    pub consent: Option<ConsentText>,
    /// Minimum necessary per resource type: what its main table stores.
    #[serde(default)]
    pub tables: BTreeMap<String, TableText>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableText {
    /// `false`: the `resource` column keeps only `resourceType`, `id` and
    /// `meta` (tagged `raw-omitted`); the view columns hold the rest.
    #[serde(default = "stores_raw")]
    pub raw: bool,
    /// The root elements the lake keeps (`gender`, `deceased[x]`): the rest
    /// is removed and the resource tagged `SUBSETTED`; an export or sync
    /// asks the server for only these (`_elements`).
    pub elements: Option<Vec<String>>,
}

fn stores_raw() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentText {
    /// NDJSON of R4 Consent resources, relative to the policy file.
    pub file: Option<PathBuf>,
    /// Or the lake's own table of Consent resources (`consent`, where an
    /// export or sync puts them), read at the start of every job.
    pub table: Option<String>,
    /// The lake's purpose of use (v3-ActReason), e.g. `HRESCH` for research.
    pub purpose: String,
    /// Who receives the lake's data (`Organization/research-institute`):
    /// provisions about other actors do not apply. Without it, a deny about
    /// any actor applies (fail closed) and a permit about one does not.
    pub actor: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueSetText {
    /// A TSV file, relative to the policy file.
    pub file: Option<PathBuf>,
    /// `system|code`, every day.
    pub codes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleText {
    pub name: String,
    pub action: Action,
    pub description: Option<String>,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub codes: Vec<String>,
    #[serde(default)]
    pub add_labels: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    /// Matches resources of patients whose active Consent denies the lake's
    /// purpose (`[consent]`) at the resource's date.
    #[serde(default)]
    pub consent: bool,
    /// Also takes the compartment of each Encounter the rule segregates:
    /// every resource referencing it, and its sub-encounters.
    pub compartment: Option<CompartmentKind>,
}

/// Whose compartment a rule extends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompartmentKind {
    Encounter,
}

/// A policy file that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {origin}: {message}")]
pub struct PolicyError {
    pub origin: String,
    pub message: String,
}

/// A policy file, read.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// `builtin:part2` or the path given.
    pub origin: String,
    pub text: PolicyText,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Every value set a rule names, in the order first named.
    pub value_sets: Vec<ValueSet>,
    /// `[consent]`, read (empty until the job reads them when they come
    /// from the lake: `lake_consents`).
    pub consents: Option<std::sync::Arc<super::consent::Consents>>,
    /// `[consent] table`: the lake table each job reads the Consents from.
    pub lake_consents: Option<String>,
}

impl PolicySource {
    /// `spec` is a path, or the name of a shipped policy when no such file
    /// exists.
    pub fn load(spec: &str) -> Result<PolicySource, PolicyError> {
        let path = Path::new(spec);
        if !path.exists()
            && let Some((name, text)) = BUILTIN_POLICIES.iter().find(|(n, _)| *n == spec)
        {
            return Self::parse(&format!("builtin:{name}"), text, None);
        }
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            origin: spec.to_owned(),
            message: format!(
                "cannot read it ({e}); give a TOML policy file or one of: {}",
                BUILTIN_POLICIES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        Self::parse(spec, &text, path.parent())
    }

    /// Parses a policy's text; value-set files are read relative to `dir`.
    pub fn parse(
        origin: &str,
        text: &str,
        dir: Option<&Path>,
    ) -> Result<PolicySource, PolicyError> {
        let err = |message: String| PolicyError {
            origin: origin.to_owned(),
            message,
        };
        let parsed: PolicyText =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_owned()))?;
        if parsed.rules.is_empty()
            && parsed
                .tables
                .values()
                .all(|t| t.raw && t.elements.is_none())
        {
            return Err(err(
                "no [[rule]] and no [tables.T] raw = false or elements: a policy without any \
                 would keep everything; leave --policy out for that"
                    .into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for rule in &parsed.rules {
            if !names.insert(rule.name.as_str()) {
                return Err(err(format!("two rules are named `{}`", rule.name)));
            }
        }
        let mut value_sets: Vec<ValueSet> = Vec::new();
        for rule in &parsed.rules {
            for set in &rule.codes {
                if value_sets.iter().any(|s| &*s.name == set.as_str()) {
                    continue;
                }
                let loaded = value_set(origin, &parsed, set, dir)
                    .map_err(|m| err(format!("rule `{}`: {m}", rule.name)))?;
                value_sets.push(loaded);
            }
        }
        for name in parsed.valuesets.keys() {
            if !value_sets.iter().any(|s| &*s.name == name.as_str()) {
                return Err(err(format!(
                    "value set `{name}` is defined but no rule uses it (a misspelt rule?)"
                )));
            }
        }
        let asks = parsed.rules.iter().any(|r| r.consent);
        let lake_consents = parsed.consent.as_ref().and_then(|c| c.table.clone());
        let consents = match (&parsed.consent, asks) {
            (Some(c), true) if c.file.is_some() && c.table.is_some() => {
                return Err(err("[consent] has both file and table; give one".into()));
            }
            (Some(c), true) if c.table.is_some() => {
                // Read by each job from the lake; none until then.
                let empty = super::consent::Consents::parse("", "", &c.purpose, c.actor.as_deref())
                    .map_err(err)?;
                Some((std::sync::Arc::new(empty), String::new()))
            }
            (Some(c), true) => {
                let Some(file) = &c.file else {
                    return Err(err(
                        "[consent] needs file = \"consents.ndjson\" or table = \"consent\"".into(),
                    ));
                };
                let path = dir.map_or_else(|| file.clone(), |d| d.join(file));
                let bytes = std::fs::read_to_string(&path).map_err(|e| {
                    err(format!("cannot read the Consents {} ({e})", path.display()))
                })?;
                let consents = super::consent::Consents::parse(
                    &path.display().to_string(),
                    &bytes,
                    &c.purpose,
                    c.actor.as_deref(),
                )
                .map_err(err)?;
                Some((std::sync::Arc::new(consents), bytes))
            }
            (None, true) => {
                return Err(err(
                    "a rule asks for consent but there is no [consent] file".into(),
                ));
            }
            (Some(_), false) => {
                return Err(err(
                    "[consent] is given but no rule has consent = true".into()
                ));
            }
            (None, false) => None,
        };
        // The directive version covers the Consents the policy reads too.
        let mut digest = Sha256::new();
        digest.update(text.as_bytes());
        if let Some((_, bytes)) = &consents {
            digest.update(bytes.as_bytes());
        }
        Ok(PolicySource {
            origin: origin.to_owned(),
            text: parsed,
            sha256: hex::encode(digest.finalize()),
            value_sets,
            consents: consents.map(|(c, _)| c),
            lake_consents,
        })
    }

    /// The same policy with the Consents `text` (NDJSON) read from the lake
    /// table its `[consent] table` names; the version then covers them.
    pub fn with_consents(&self, origin: &str, text: &str) -> Result<PolicySource, PolicyError> {
        let err = |message: String| PolicyError {
            origin: self.origin.clone(),
            message,
        };
        let Some(c) = &self.text.consent else {
            return Err(err("it has no [consent] section".into()));
        };
        let consents =
            super::consent::Consents::parse(origin, text, &c.purpose, c.actor.as_deref())
                .map_err(err)?;
        let mut digest = Sha256::new();
        digest.update(self.sha256.as_bytes());
        digest.update(text.as_bytes());
        Ok(PolicySource {
            consents: Some(std::sync::Arc::new(consents)),
            sha256: hex::encode(digest.finalize()),
            ..self.clone()
        })
    }

    /// The name the ledger shows: the file's `name`, else its origin.
    pub fn name(&self) -> &str {
        self.text.name.as_deref().unwrap_or(&self.origin)
    }
}

/// A value set a rule names: the policy's own `[valuesets.NAME]`, else a
/// shipped one.
fn value_set(
    origin: &str,
    policy: &PolicyText,
    name: &str,
    dir: Option<&Path>,
) -> Result<ValueSet, String> {
    let Some(spec) = policy.valuesets.get(name) else {
        return ValueSet::builtin(name).ok_or_else(|| {
            format!(
                "no value set `{name}`: define [valuesets.{name}] or use one fhirlake ships ({})",
                BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    };
    let from = format!("{origin}#valuesets.{name}");
    match (&spec.file, &spec.codes) {
        (Some(file), None) => {
            let path = dir.map_or_else(|| file.clone(), |d| d.join(file));
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("value set `{name}`: cannot read {} ({e})", path.display()))?;
            ValueSet::parse_tsv(name, &path.display().to_string(), &text).map_err(|e| e.to_string())
        }
        (None, Some(codes)) => {
            ValueSet::inline(name, &from, codes).map_err(|m| format!("{from}: {m}"))
        }
        _ => Err(format!("{from}: give exactly one of `file` and `codes`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_policies_parse() {
        for (name, _) in BUILTIN_POLICIES {
            let policy = PolicySource::load(name).unwrap();
            assert_eq!(policy.origin, format!("builtin:{name}"));
            assert_eq!(policy.name(), *name);
            assert_eq!(policy.sha256.len(), 64);
            assert_eq!(policy.value_sets.len(), 3);
        }
    }

    #[test]
    fn unknown_keys_and_missing_sets_are_errors_that_say_where() {
        let e = PolicySource::parse(
            "p.toml",
            "[[rule]]\nname = \"a\"\naction = \"deny\"\nlables = [\"R\"]\n",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("policy p.toml: "), "{e}");
        assert!(e.message.contains("lables"), "{e}");
        let e = PolicySource::parse(
            "p.toml",
            "[[rule]]\nname = \"a\"\naction = \"hide\"\n",
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("hide"), "{e}");
        let e = PolicySource::parse(
            "p.toml",
            "[[rule]]\nname = \"a\"\naction = \"deny\"\ncodes = [\"nope\"]\n",
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("rule `a`: no value set `nope`"), "{e}");
        let e = PolicySource::parse("p.toml", "name = \"x\"\n", None).unwrap_err();
        assert!(e.message.contains("no [[rule]]"), "{e}");
        let two = "[[rule]]\nname = \"a\"\naction = \"deny\"\n[[rule]]\nname = \"a\"\naction = \"allow\"\n";
        assert!(
            PolicySource::parse("p", two, None)
                .unwrap_err()
                .message
                .contains("two rules")
        );
        let unused =
            "[valuesets.x]\ncodes = [\"http://s|1\"]\n[[rule]]\nname = \"a\"\naction = \"deny\"\n";
        assert!(
            PolicySource::parse("p", unused, None)
                .unwrap_err()
                .message
                .contains("no rule uses it")
        );
        assert!(
            PolicySource::load("/nonexistent/policy.toml")
                .unwrap_err()
                .message
                .contains("part2, research")
        );
    }

    #[test]
    fn value_sets_come_from_files_beside_the_policy_or_inline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("local.tsv"),
            "@system http://acme.org/codes\nX1\n",
        )
        .unwrap();
        let text = "[valuesets.local]\nfile = \"local.tsv\"\n[valuesets.inline]\ncodes = [\"http://snomed.info/sct|86406008\"]\n\
                    [[rule]]\nname = \"a\"\naction = \"deny\"\ncodes = [\"local\", \"inline\", \"sud-snomed\"]\n";
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        let policy = PolicySource::load(dir.path().join("p.toml").to_str().unwrap()).unwrap();
        let sizes: Vec<_> = policy
            .value_sets
            .iter()
            .map(|s| (s.name.to_string(), s.entries.len()))
            .collect();
        assert_eq!(
            sizes,
            [
                ("local".into(), 1),
                ("inline".into(), 1),
                ("sud-snomed".into(), 77)
            ]
        );
        assert_eq!(policy.sha256, hex::encode(Sha256::digest(text.as_bytes())));
    }
}
