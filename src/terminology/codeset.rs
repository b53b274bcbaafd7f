//! A set of (system, code) pairs, looked up by `&str` without allocating,
//! and the fast hasher of the job's compiled lookups.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// The Fx hash (rustc's): a multiply and rotate per 8 bytes, several times
/// faster than SipHash on short keys. Only for maps whose keys come from
/// the job's configuration (value sets, maps, the system table): input only
/// looks them up, so it cannot flood them. Maps that input inserts into (the
/// checker's system cache, the curation queue) keep std's SipHash.
#[derive(Debug, Clone, Copy, Default)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// `HashMap`/`HashSet` state for [`FxHasher`].
pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = HashMap<K, V, FxBuild>;
pub type FxHashSet<K> = HashSet<K, FxBuild>;

/// Codes grouped by system: two hash lookups per membership test, no
/// allocation; systems are few per set, codes many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeSet {
    by_system: FxHashMap<Box<str>, FxHashSet<Box<str>>>,
}

impl CodeSet {
    pub fn insert(&mut self, system: &str, code: &str) -> bool {
        match self.by_system.get_mut(system) {
            Some(codes) => codes.insert(code.into()),
            None => {
                self.by_system
                    .insert(system.into(), FxHashSet::from_iter([code.into()]));
                true
            }
        }
    }

    /// Whether `code` is in the set under any system (for a bare `code`
    /// element, which carries no system of its own).
    pub fn contains_code(&self, code: &str) -> bool {
        self.by_system.values().any(|codes| codes.contains(code))
    }

    pub fn contains(&self, system: &str, code: &str) -> bool {
        self.by_system
            .get(system)
            .is_some_and(|codes| codes.contains(code))
    }

    pub fn remove(&mut self, system: &str, code: &str) -> bool {
        let Some(codes) = self.by_system.get_mut(system) else {
            return false;
        };
        let removed = codes.remove(code);
        if codes.is_empty() {
            self.by_system.remove(system);
        }
        removed
    }

    /// Drops every code of `system`.
    pub fn remove_system(&mut self, system: &str) {
        self.by_system.remove(system);
    }

    pub fn has_system(&self, system: &str) -> bool {
        self.by_system.contains_key(system)
    }

    pub fn len(&self) -> usize {
        self.by_system.values().map(|codes| codes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_system.values().all(|codes| codes.is_empty())
    }

    /// Every (system, code), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_system
            .iter()
            .flat_map(|(system, codes)| codes.iter().map(move |code| (&**system, &**code)))
    }

    pub fn systems(&self) -> impl Iterator<Item = &str> {
        self.by_system.keys().map(|s| &**s)
    }

    pub fn extend_from(&mut self, other: &CodeSet) {
        for (system, code) in other.iter() {
            self.insert(system, code);
        }
    }

    /// Keeps only the pairs `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        for (system, codes) in &mut self.by_system {
            codes.retain(|code| keep(system, code));
        }
        self.by_system.retain(|_, codes| !codes.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fx_hash_tells_short_keys_apart() {
        use std::hash::BuildHasher;
        let h = |s: &str| FxBuild::default().hash_one(s);
        assert_ne!(h("a"), h("a\0"));
        assert_ne!(h("http://loinc.org"), h("http://loinc.orh"));
        assert_eq!(h("http://snomed.info/sct"), h("http://snomed.info/sct"));
    }

    #[test]
    fn a_bare_code_is_found_under_any_system() {
        let mut set = CodeSet::default();
        set.insert("http://hl7.org/fhir/request-intent", "order");
        assert!(set.contains_code("order"));
        assert!(!set.contains_code("plan"));
        assert!(!set.contains("http://other", "order"));
    }

    #[test]
    fn set_operations() {
        let mut set = CodeSet::default();
        assert!(set.is_empty());
        assert!(set.insert("http://loinc.org", "8867-4"));
        assert!(!set.insert("http://loinc.org", "8867-4"));
        set.insert("http://loinc.org", "8480-6");
        set.insert("http://snomed.info/sct", "38341003");
        assert_eq!(set.len(), 3);
        assert!(set.contains("http://loinc.org", "8867-4"));
        assert!(!set.contains("http://snomed.info/sct", "8867-4"));
        assert!(!set.contains("http://loinc.org/", "8867-4"));
        set.retain(|_, code| code != "8480-6");
        assert_eq!(set.len(), 2);
        assert!(set.remove("http://loinc.org", "8867-4"));
        assert!(!set.has_system("http://loinc.org"));
        assert!(set.has_system("http://snomed.info/sct"));
        set.remove_system("http://snomed.info/sct");
        assert!(set.is_empty());
    }
}
