//! The resource with the codings concept maps add: a new tree in the
//! line's arena that shares every unchanged subtree with the parsed one,
//! each mapped concept's `coding` array extended. Written back with
//! [`Json::write_compact`], numbers stay exactly as they came.

use bumpalo::Bump;

use crate::terminology::{Target, Terminology};
use crate::view::Json;

/// The extension on an added coding naming the ConceptMap that produced it.
pub const MAPPED_FROM: &str = "urn:fhirlake:concept-map";

/// `resource` with `added` codings (by index into `concepts`) appended to
/// those concepts' `coding` arrays, as compact JSON.
pub fn write_with_codings<'a>(
    arena: &'a Bump,
    resource: &'a Json<'a>,
    concepts: &[&'a Json<'a>],
    added: &[(usize, &Target)],
    terminology: &Terminology,
) -> String {
    let edit = Edit {
        arena,
        concepts,
        added,
        terminology,
    };
    let changed = edit.value(resource).unwrap_or(*resource);
    let mut out = String::with_capacity(1024);
    changed.write_compact(&mut out);
    out
}

struct Edit<'e, 'a> {
    arena: &'a Bump,
    concepts: &'e [&'a Json<'a>],
    added: &'e [(usize, &'e Target)],
    terminology: &'e Terminology,
}

impl<'a> Edit<'_, 'a> {
    /// The value with additions below it, or `None` when none are.
    fn value(&self, value: &'a Json<'a>) -> Option<Json<'a>> {
        match value {
            Json::Array(items) => {
                let changed: Vec<Option<Json<'a>>> = items.iter().map(|i| self.value(i)).collect();
                changed.iter().any(Option::is_some).then(|| {
                    let items = items.iter().zip(changed).map(|(i, c)| c.unwrap_or(*i));
                    Json::Array(self.arena.alloc_slice_fill_iter(items))
                })
            }
            Json::Object(members) => {
                let concept = self.concepts.iter().position(|c| std::ptr::eq(*c, value));
                let changed: Vec<Option<Json<'a>>> = members
                    .iter()
                    .map(|(name, member)| match (concept, member) {
                        (Some(at), Json::Array(codings)) if *name == "coding" => {
                            Some(self.extended(codings, at))
                        }
                        _ => self.value(member),
                    })
                    .collect();
                changed.iter().any(Option::is_some).then(|| {
                    let members = members
                        .iter()
                        .zip(changed)
                        .map(|((k, v), c)| (*k, c.unwrap_or(*v)));
                    Json::Object(self.arena.alloc_slice_fill_iter(members))
                })
            }
            _ => None,
        }
    }

    fn extended(&self, codings: &'a [Json<'a>], concept: usize) -> Json<'a> {
        let added = self
            .added
            .iter()
            .filter(|(c, _)| *c == concept)
            .map(|(_, target)| self.coding(target));
        let all: Vec<Json<'a>> = codings.iter().copied().chain(added).collect();
        Json::Array(self.arena.alloc_slice_copy(&all))
    }

    fn coding(&self, target: &Target) -> Json<'a> {
        let arena = self.arena;
        let text = |s: &str| Json::String(arena.alloc_str(s));
        let map = self.terminology.concept_maps().map(target.map);
        // The map's canonical URL; a map without one is named by its file.
        let from = match &map.url {
            Some(url) => ("valueUri", text(url)),
            None => ("valueString", text(&map.origin.to_string())),
        };
        let extension = arena.alloc_slice_copy(&[("url", Json::String(MAPPED_FROM)), from]);
        let extensions = arena.alloc_slice_copy(&[Json::Object(extension)]);
        let mut members = vec![
            ("extension", Json::Array(extensions)),
            ("system", text(&target.system)),
            ("code", text(&target.code)),
        ];
        if let Some(display) = &target.display {
            members.push(("display", text(display)));
        }
        Json::Object(arena.alloc_slice_copy(&members))
    }
}
