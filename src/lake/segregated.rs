//! A second lake for what a policy segregates. With `--segregated-lake URI`
//! every `_segregated/<table>` (and its key index) lives there, opened with
//! its own credentials, so access to the main lake grants none to them.
//!
//! The main lake records the choice (`_fhirlake/segregated-lake.json`, the
//! URI only): from then on a job that writes to it without that lake is
//! refused before it reads anything, so segregated rows can never land in
//! the main lake by a forgotten flag. A reading command (status, verify)
//! without it simply does not see the segregated tables.

use std::sync::Arc;

use object_store::{PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Lake, LakeError, list_tables};
use crate::fhir::is_segregated_table;

/// The main lake's record of where its segregated tables are.
pub const SEGREGATED_SETTING_PATH: &str = "_fhirlake/segregated-lake.json";

/// What a command does with a lake's segregated tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegregatedAccess {
    /// Reads the lake: a segregated lake it was not given is not seen.
    Reading,
    /// Must see every table (a policy dry run): a recorded lake must be given.
    ReadingAll,
    /// Writes: a recorded lake must be given, and a first one is recorded.
    Writing,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Setting {
    uri: String,
}

impl Lake {
    /// The lake that holds table `name`: the segregated lake for a
    /// `_segregated/<table>` when one is attached, else this one.
    pub fn holding(&self, name: &str) -> &Lake {
        match &self.segregated {
            Some(segregated) if is_segregated_table(name) => segregated,
            _ => self,
        }
    }

    /// The segregated lake this lake recorded (its URI), whether or not it
    /// was given to this command.
    pub async fn recorded_segregated_lake(&self) -> Result<Option<String>, LakeError> {
        let Some(bytes) = self
            .read_object(&self.path(SEGREGATED_SETTING_PATH))
            .await?
        else {
            return Ok(None);
        };
        let setting: Setting =
            serde_json::from_slice(&bytes).map_err(|e| LakeError::Segregated {
                uri: self.root().to_string(),
                detail: format!(
                "{SEGREGATED_SETTING_PATH} is not a segregated-lake setting ({e}); it is written by fhirlake"
            ),
            })?;
        Ok(Some(setting.uri))
    }

    /// The lake segregated tables go to, when not this one.
    pub fn segregated_lake(&self) -> Option<&Lake> {
        self.segregated.as_deref()
    }

    /// Attaches `segregated` (the `--segregated-lake`, if given) after
    /// checking it against what the lake recorded, as `access` needs.
    pub async fn with_segregated(
        self,
        segregated: Option<Lake>,
        access: SegregatedAccess,
    ) -> Result<Lake, LakeError> {
        let refuse = |detail: String| LakeError::Segregated {
            uri: self.root().to_string(),
            detail,
        };
        // An unreachable store is named, with what to check, before the
        // setting is read (which would only retry and fail less clearly).
        if access == SegregatedAccess::Writing {
            self.ensure_put_if_absent().await?;
        }
        let stored = self.recorded_segregated_lake().await?;
        match (stored, segregated) {
            (None, None) => Ok(self),
            (Some(stored), None) if access != SegregatedAccess::Reading => Err(refuse(format!(
                "this lake keeps its segregated tables in {stored}: give --segregated-lake \
                 {stored} (and --segregated-credentials FILE for its credentials) to every job \
                 that writes to it or re-evaluates its policy"
            ))),
            (Some(_), None) => Ok(self),
            (Some(stored), Some(given)) if stored != given.root().as_str() => Err(refuse(format!(
                "this lake keeps its segregated tables in {stored}, not {}: give that URI",
                given.root()
            ))),
            (Some(_), Some(given)) => self.attach(given, access, false).await,
            (None, Some(given)) => {
                if given.root() == self.root() {
                    return Err(refuse(
                        "--segregated-lake names the lake itself; leave it out to keep \
                         `_segregated/<table>` inside the lake"
                            .into(),
                    ));
                }
                if let Some(inside) = list_tables(&self)
                    .await?
                    .into_iter()
                    .find(|t| is_segregated_table(t))
                {
                    return Err(refuse(format!(
                        "this lake already holds segregated tables itself ({inside}); a second \
                         lake cannot take over from them (leave --segregated-lake out)"
                    )));
                }
                self.attach(given, access, true).await
            }
        }
    }

    /// Attaches `given`; a writing job first checks that its credentials
    /// work, then (`first`) records it, so the main lake never points at a
    /// lake it cannot use.
    async fn attach(
        mut self,
        given: Lake,
        access: SegregatedAccess,
        first: bool,
    ) -> Result<Lake, LakeError> {
        if access == SegregatedAccess::Writing {
            given.ensure_put_if_absent().await?;
            if first {
                self.record(&given).await?;
            }
        }
        self.segregated = Some(Arc::new(given));
        Ok(self)
    }

    /// Records `segregated` as this lake's segregated lake; a concurrent
    /// first job recording the same URI is fine, another one is not.
    async fn record(&self, segregated: &Lake) -> Result<(), LakeError> {
        let path = self.path(SEGREGATED_SETTING_PATH);
        let setting = Setting {
            uri: segregated.root().to_string(),
        };
        let body = serde_json::to_vec_pretty(&setting).expect("a setting serialises");
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store()
            .put_opts(&path, PutPayload::from(body), options)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let stored = self.read_object(&path).await?.unwrap_or_default();
                match serde_json::from_slice::<Setting>(&stored) {
                    Ok(stored) if stored.uri == setting.uri => Ok(()),
                    _ => Err(LakeError::Segregated {
                        uri: self.root().to_string(),
                        detail: "another job recorded a different segregated lake at the same \
                                 time; run again"
                            .into(),
                    }),
                }
            }
            Err(source) => Err(LakeError::Store {
                path: path.to_string(),
                source,
            }),
        }
    }
}
