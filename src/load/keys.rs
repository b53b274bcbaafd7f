//! A job's keys: how each incoming row stands against the table, and, at
//! commit, which of the job's rows win.
//!
//! While a job streams, each resource is classified against the table's key
//! index alone ([`classify`]): rows that are new or newer there are written,
//! the rest are not. The written rows' keys go to a [`Spill`] (memory bounded
//! by one buffer). At commit the keys come back sorted, grouped by id (by id
//! and version in history mode), and [`resolve`] replays each group in the
//! order the job read it, exactly as if every row had been classified against
//! the table *and* the rows before it: the last row that is new or newer wins;
//! the others are deleted again by a deletion vector on the job's own file,
//! and their counts move to what they really were (an "inserted" duplicate
//! that was older becomes "unchanged"). Within-job duplicates are rare; the
//! common case is a group of one.

use std::collections::BTreeMap;

use crate::lake::{Entry, Hit, LoadMode, Record};

/// How an incoming row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No stored row of the key (or it was deleted earlier): insert.
    New,
    /// A stored row it supersedes (current mode): insert, delete the old.
    Newer,
    /// The same version is stored, or a newer one: nothing to do.
    Unchanged,
    /// A subset (`SUBSETTED`) that would supersede a full row: never loaded.
    SubsetOfFull,
}

/// What a row of the same version as the stored one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameVersion {
    /// Nothing: the version is already stored (every load).
    #[default]
    Unchanged,
    /// Replaces it (and a tombstone of that instant): `policy apply` stores
    /// the same version changed by a new policy, or moves it back.
    Replaces,
}

/// What is stored for a key, as far as classifying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stored {
    pub last_updated: i64,
    pub subsetted: bool,
    pub tombstone: bool,
}

impl From<&Hit> for Stored {
    fn from(hit: &Hit) -> Self {
        Stored {
            last_updated: hit.last_updated,
            subsetted: hit.subsetted(),
            tombstone: hit.tombstone(),
        }
    }
}

/// The rule of both modes. Current mode: the newest `meta.lastUpdated` wins,
/// but a subset never replaces a full row and a full row replaces a subset
/// of the same instant; a tombstone yields only to a newer version. History
/// mode: `stored` is the exact version's entry, if any.
pub fn classify(
    mode: LoadMode,
    same: SameVersion,
    stored: Option<Stored>,
    last_updated: i64,
    subsetted: bool,
) -> Class {
    let replaces = same == SameVersion::Replaces;
    match (mode, stored) {
        (_, None) => Class::New,
        (LoadMode::Current, Some(s))
            if replaces && s.tombstone && last_updated >= s.last_updated =>
        {
            Class::New
        }
        (LoadMode::Current, Some(s))
            if replaces
                && !s.tombstone
                && last_updated == s.last_updated
                && s.subsetted == subsetted =>
        {
            Class::Newer
        }
        (LoadMode::History, Some(_)) => Class::Unchanged,
        (LoadMode::Current, Some(s)) if s.tombstone => {
            if last_updated > s.last_updated {
                Class::New
            } else {
                Class::Unchanged
            }
        }
        (LoadMode::Current, Some(s)) if !s.subsetted && subsetted => Class::SubsetOfFull,
        (LoadMode::Current, Some(s))
            if last_updated > s.last_updated
                || (last_updated == s.last_updated && s.subsetted && !subsetted) =>
        {
            Class::Newer
        }
        (LoadMode::Current, Some(_)) => Class::Unchanged,
    }
}

/// One written row's key, as the spill keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobKey {
    pub key: u128,
    /// Groups versions in history mode (its lastUpdated); 0 in current mode.
    pub version: i64,
    /// Where the job read the row (increases in reading order).
    pub order: u64,
    pub last_updated: i64,
    /// The row's position in the table's staged rows.
    pub seq: u64,
    /// The input it came from (an index into the job's input records).
    pub input: u32,
    pub subsetted: bool,
    /// How it was counted when read (against the table alone).
    pub counted: u8,
    /// The table's row for the key when it was read.
    pub stored: Option<(Stored, u32, u32)>,
}

fn class_code(class: Class) -> u8 {
    match class {
        Class::New => 0,
        Class::Newer => 1,
        Class::Unchanged => 2,
        Class::SubsetOfFull => 3,
    }
}

fn class_of(code: u8) -> Class {
    match code {
        0 => Class::New,
        1 => Class::Newer,
        2 => Class::Unchanged,
        _ => Class::SubsetOfFull,
    }
}

impl JobKey {
    pub fn counted(&self) -> Class {
        class_of(self.counted)
    }

    pub fn with_counted(mut self, class: Class) -> Self {
        self.counted = class_code(class);
        self
    }
}

impl Record for JobKey {
    const SIZE: usize = 16 + 8 + 8 + 8 + 8 + 4 + 1 + 1 + (1 + 8 + 1 + 4 + 4);

    fn encode(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.key.to_be_bytes());
        out[16..24].copy_from_slice(&self.version.to_le_bytes());
        out[24..32].copy_from_slice(&self.order.to_le_bytes());
        out[32..40].copy_from_slice(&self.last_updated.to_le_bytes());
        out[40..48].copy_from_slice(&self.seq.to_le_bytes());
        out[48..52].copy_from_slice(&self.input.to_le_bytes());
        out[52] = u8::from(self.subsetted);
        out[53] = self.counted;
        match self.stored {
            None => out[54..72].fill(0),
            Some((stored, file, row)) => {
                out[54] = 1 | (u8::from(stored.subsetted) << 1) | (u8::from(stored.tombstone) << 2);
                out[55..63].copy_from_slice(&stored.last_updated.to_le_bytes());
                out[63] = 0;
                out[64..68].copy_from_slice(&file.to_le_bytes());
                out[68..72].copy_from_slice(&row.to_le_bytes());
            }
        }
    }

    fn decode(b: &[u8]) -> Self {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        JobKey {
            key: u128::from_be_bytes(b[..16].try_into().expect("16 bytes")),
            version: u64_at(16) as i64,
            order: u64_at(24),
            last_updated: u64_at(32) as i64,
            seq: u64_at(40),
            input: u32_at(48),
            subsetted: b[52] != 0,
            counted: b[53],
            stored: (b[54] & 1 != 0).then(|| {
                let stored = Stored {
                    last_updated: u64_at(55) as i64,
                    subsetted: b[54] & 2 != 0,
                    tombstone: b[54] & 4 != 0,
                };
                (stored, u32_at(64), u32_at(68))
            }),
        }
    }
}

/// What resolving a group decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The winning row (its staged position and version), if a job row won.
    pub winner: Option<JobKey>,
    /// What the winner really was (new, or newer than a stored row).
    pub winner_class: Option<Class>,
    /// Job rows that lost (their staged positions).
    pub losers: Vec<u64>,
    /// Whether the table's stored row is superseded (its file and row).
    pub supersedes: Option<(u32, u32)>,
    /// Counting corrections: (input, counted as, really).
    pub recount: Vec<(u32, Class, Class)>,
}

/// Resolves one group: the job's rows of one key (one version, in history
/// mode), in reading order, against what the table stores (`stored`, as it
/// is now: it may differ from when the rows were read, after a concurrent
/// writer committed).
pub fn resolve(
    mode: LoadMode,
    same: SameVersion,
    stored: Option<(Stored, u32, u32)>,
    group: &[JobKey],
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut state = stored.map(|(s, _, _)| s);
    let mut winner: Option<&JobKey> = None;
    for row in group {
        let class = classify(mode, same, state, row.last_updated, row.subsetted);
        if class != row.counted() {
            outcome.recount.push((row.input, row.counted(), class));
        }
        if matches!(class, Class::New | Class::Newer) {
            if let Some(previous) = winner {
                outcome.losers.push(previous.seq);
            }
            winner = Some(row);
            // A row replacing the job's own earlier winner is what that one was.
            if outcome.winner_class.is_none() || class == Class::New {
                outcome.winner_class = Some(class);
            }
            state = Some(Stored {
                last_updated: row.last_updated,
                subsetted: row.subsetted,
                tombstone: false,
            });
        } else {
            outcome.losers.push(row.seq);
        }
    }
    outcome.winner = winner.copied();
    if winner.is_some()
        && let Some((s, file, row)) = stored
        && !s.tombstone
        && mode == LoadMode::Current
    {
        outcome.supersedes = Some((file, row));
    }
    outcome
}

/// Counting corrections summed per (input, class counted, class really).
pub type Recounts = BTreeMap<(u32, u8, u8), u64>;

pub fn add_recounts(total: &mut Recounts, outcome: &Outcome) {
    for (input, from, to) in &outcome.recount {
        *total
            .entry((*input, class_code(*from), class_code(*to)))
            .or_default() += 1;
    }
}

/// Recount key back to classes.
pub fn recount_classes(key: &(u32, u8, u8)) -> (u32, Class, Class) {
    (key.0, class_of(key.1), class_of(key.2))
}

/// The index entry of a winning row at `(file, row)`.
pub fn entry_of(winner: &JobKey, file: u32, row: u32) -> Entry {
    Entry {
        key: winner.key,
        last_updated: winner.last_updated,
        file,
        row,
        flags: if winner.subsetted {
            Entry::SUBSETTED
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(t: i64) -> Option<Stored> {
        Some(Stored {
            last_updated: t,
            subsetted: false,
            tombstone: false,
        })
    }

    #[test]
    fn current_mode_keeps_the_newest_and_never_lets_a_subset_replace_a_full_row() {
        let c = |s, t, sub| classify(LoadMode::Current, SameVersion::Unchanged, s, t, sub);
        assert_eq!(c(None, 10, false), Class::New);
        assert_eq!(c(stored(10), 10, false), Class::Unchanged);
        assert_eq!(
            c(stored(10), 5, false),
            Class::Unchanged,
            "stale never wins"
        );
        assert_eq!(c(stored(10), 20, false), Class::Newer);
        assert_eq!(c(stored(10), 20, true), Class::SubsetOfFull);
        let subset = Some(Stored {
            last_updated: 10,
            subsetted: true,
            tombstone: false,
        });
        assert_eq!(
            c(subset, 10, false),
            Class::Newer,
            "full replaces a subset of its instant"
        );
        assert_eq!(c(subset, 10, true), Class::Unchanged);
        assert_eq!(c(subset, 11, true), Class::Newer);
        let deleted = Some(Stored {
            last_updated: 10,
            subsetted: false,
            tombstone: true,
        });
        assert_eq!(
            c(deleted, 10, false),
            Class::Unchanged,
            "deleted after this version"
        );
        assert_eq!(c(deleted, 11, false), Class::New, "re-created");
        assert_eq!(
            classify(
                LoadMode::History,
                SameVersion::Unchanged,
                stored(10),
                10,
                false
            ),
            Class::Unchanged
        );
        assert_eq!(
            classify(LoadMode::History, SameVersion::Unchanged, None, 10, false),
            Class::New
        );
    }

    fn row(order: u64, t: i64, counted: Class) -> JobKey {
        JobKey {
            key: 7,
            version: 0,
            order,
            last_updated: t,
            seq: order * 10,
            input: order as u32,
            subsetted: false,
            counted: class_code(counted),
            stored: None,
        }
    }

    #[test]
    fn a_group_is_replayed_in_reading_order() {
        // Nothing stored; the job read t=10, then t=20, then t=15.
        let group = [
            row(0, 10, Class::New),
            row(1, 20, Class::New),
            row(2, 15, Class::New),
        ];
        let outcome = resolve(LoadMode::Current, SameVersion::Unchanged, None, &group);
        assert_eq!(outcome.winner.map(|w| w.seq), Some(10));
        assert_eq!(outcome.losers, [0, 20]);
        assert_eq!(
            outcome.recount,
            [
                (1, Class::New, Class::Newer),
                (2, Class::New, Class::Unchanged)
            ]
        );
        assert_eq!(outcome.supersedes, None);

        // A stored row at t=5 is superseded by the job's winner.
        let stored_row = Some((stored(5).unwrap(), 3, 42));
        let group = [row(0, 10, Class::Newer), row(1, 8, Class::Newer)];
        let outcome = resolve(
            LoadMode::Current,
            SameVersion::Unchanged,
            stored_row,
            &group,
        );
        assert_eq!(outcome.winner.map(|w| w.seq), Some(0));
        assert_eq!(outcome.losers, [10]);
        assert_eq!(outcome.supersedes, Some((3, 42)));
        assert_eq!(outcome.recount, [(1, Class::Newer, Class::Unchanged)]);

        // A concurrent writer stored t=30 since: every job row loses.
        let newer = Some((stored(30).unwrap(), 9, 1));
        let outcome = resolve(
            LoadMode::Current,
            SameVersion::Unchanged,
            newer,
            &[row(0, 10, Class::New)],
        );
        assert_eq!(
            (outcome.winner, outcome.losers.as_slice()),
            (None, &[0][..])
        );
        assert_eq!(outcome.supersedes, None);
        assert_eq!(outcome.recount, [(0, Class::New, Class::Unchanged)]);
    }

    #[test]
    fn job_keys_survive_the_spill_format() {
        let mut key = row(3, -5, Class::Newer);
        key.stored = Some((
            Stored {
                last_updated: -9,
                subsetted: true,
                tombstone: true,
            },
            17,
            4_000_000,
        ));
        key.subsetted = true;
        let mut bytes = vec![0u8; JobKey::SIZE];
        key.encode(&mut bytes);
        assert_eq!(JobKey::decode(&bytes), key);
        let plain = row(1, 2, Class::New);
        plain.encode(&mut bytes);
        assert_eq!(JobKey::decode(&bytes), plain);
    }
}
