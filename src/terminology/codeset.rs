//! A set of (system, code) pairs, looked up by `&str` without allocating.

use std::collections::{HashMap, HashSet};

/// Codes grouped by system: two hash lookups per membership test, no
/// allocation; systems are few per set, codes many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeSet {
    by_system: HashMap<Box<str>, HashSet<Box<str>>>,
}

impl CodeSet {
    pub fn insert(&mut self, system: &str, code: &str) -> bool {
        match self.by_system.get_mut(system) {
            Some(codes) => codes.insert(code.into()),
            None => {
                self.by_system.insert(system.into(), HashSet::from([code.into()]));
                true
            }
        }
    }

    pub fn contains(&self, system: &str, code: &str) -> bool {
        self.by_system.get(system).is_some_and(|codes| codes.contains(code))
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
        self.by_system.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_system.values().all(HashSet::is_empty)
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
