//! Reading FHIR resources of given types from a directory, a JSON file, or a
//! FHIR package (`.tgz`: gzip-compressed tar, resources under `package/`).
//!
//! In: a path and the resource types wanted. Out: each matching resource's
//! bytes with its [`Origin`]. In a package only the members directly under
//! `package/` are read (not `package/example/` or `package/other/`), and
//! `package.json` / `.index.json` are skipped. A member or file that is not
//! JSON is an error naming it: a terminology source is configuration, and a
//! broken one must not pass unnoticed.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use serde::Deserialize;

use super::error::{Origin, TerminologyError};

/// How many resources a source held, and how many were of a wanted type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    pub resources: usize,
    pub matched: usize,
}

/// What is called with each matching resource: its origin and bytes.
pub type Visit<'f> = dyn FnMut(Origin, &[u8]) -> Result<(), TerminologyError> + 'f;

#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
}

/// Calls `each` with every resource in `source` whose `resourceType` is in
/// `types`: `source` is a directory (its `*.json` files and `*.tgz`
/// packages, in name order, not recursive), a `.tgz` package, or one JSON
/// file.
pub fn for_each_resource(
    source: &Path,
    types: &[&str],
    each: &mut Visit<'_>,
) -> Result<Scan, TerminologyError> {
    let meta = std::fs::metadata(source).map_err(|e| TerminologyError::Read {
        path: source.to_path_buf(),
        source: e,
    })?;
    let mut scan = Scan::default();
    if meta.is_dir() {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(source).map_err(|e| TerminologyError::Read {
            path: source.to_path_buf(),
            source: e,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|e| TerminologyError::Read {
                    path: source.to_path_buf(),
                    source: e,
                })?
                .path();
            let json = path.extension().is_some_and(|x| x == "json");
            if (json || is_package(&path)) && path.is_file() {
                files.push(path);
            }
        }
        files.sort(); // deterministic order, whatever the file system's
        for path in files {
            if is_package(&path) {
                read_package(&path, types, &mut scan, each)?;
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| TerminologyError::Read {
                path: path.clone(),
                source: e,
            })?;
            offer(Origin::file(path), &bytes, types, &mut scan, each)?;
        }
    } else if is_package(source) {
        read_package(source, types, &mut scan, each)?;
    } else {
        let bytes = std::fs::read(source).map_err(|e| TerminologyError::Read {
            path: source.to_path_buf(),
            source: e,
        })?;
        offer(Origin::file(source), &bytes, types, &mut scan, each)?;
    }
    Ok(scan)
}

fn is_package(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".tgz") || name.ends_with(".tar.gz")
}

fn read_package(
    archive: &Path,
    types: &[&str],
    scan: &mut Scan,
    each: &mut Visit<'_>,
) -> Result<(), TerminologyError> {
    let file = File::open(archive).map_err(|e| TerminologyError::Read {
        path: archive.to_path_buf(),
        source: e,
    })?;
    read_package_from(BufReader::new(file), archive, types, scan, each)
}

/// Calls `each` with every resource of a wanted type directly under
/// `package/` in the gzip-compressed tar read from `reader` (a package
/// compiled into the binary, say); `archive` names it in errors.
pub fn for_each_package_resource(
    reader: impl Read,
    archive: &Path,
    types: &[&str],
    each: &mut Visit<'_>,
) -> Result<Scan, TerminologyError> {
    let mut scan = Scan::default();
    read_package_from(reader, archive, types, &mut scan, each)?;
    Ok(scan)
}

fn read_package_from(
    reader: impl Read,
    archive: &Path,
    types: &[&str],
    scan: &mut Scan,
    each: &mut Visit<'_>,
) -> Result<(), TerminologyError> {
    let archive_err = |source| TerminologyError::Archive {
        origin: Origin::file(archive),
        source,
    };
    let mut tar = tar::Archive::new(GzDecoder::new(reader));
    let mut bytes = Vec::new();
    for entry in tar.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(archive_err)?
            .to_string_lossy()
            .into_owned();
        let Some(file_name) = name.strip_prefix("package/") else {
            continue;
        };
        if file_name.contains('/')
            || !file_name.ends_with(".json")
            || file_name == "package.json"
            || file_name.starts_with('.')
        {
            continue;
        }
        bytes.clear();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| TerminologyError::Archive {
                origin: Origin::member(archive, name.clone()),
                source: e,
            })?;
        offer(Origin::member(archive, name), &bytes, types, scan, each)?;
    }
    Ok(())
}

fn offer(
    origin: Origin,
    bytes: &[u8],
    types: &[&str],
    scan: &mut Scan,
    each: &mut Visit<'_>,
) -> Result<(), TerminologyError> {
    let peek: Peek = match serde_json::from_slice(bytes) {
        Ok(peek) => peek,
        Err(source) => return Err(TerminologyError::Json { origin, source }),
    };
    scan.resources += 1;
    if peek
        .resource_type
        .is_some_and(|t| types.contains(&t.as_str()))
    {
        scan.matched += 1;
        each(origin, bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    #[test]
    #[ignore = "reads ../shared/data (US Core packages, value sets), which a clone lacks: cargo test -- --ignored beside it"]
    fn us_core_packages_hold_their_value_sets() {
        for (package, value_sets) in [("us_core_311.tgz", 32), ("us_core_610.tgz", 36)] {
            let path = testdata::shared(&format!("us-core/packages/{package}"));
            let mut names = Vec::new();
            let scan = for_each_resource(&path, &["ValueSet"], &mut |origin, _| {
                names.push(origin.member.unwrap());
                Ok(())
            })
            .unwrap();
            assert_eq!(scan.matched, value_sets, "{package}");
            assert!(scan.resources > scan.matched);
            assert!(
                names.iter().all(|n| n.starts_with("package/ValueSet-")),
                "{names:?}"
            );
        }
    }

    #[test]
    fn a_directory_and_a_broken_file() {
        let dir = std::env::temp_dir().join(format!("fhirlake-term-pkg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.json"),
            br#"{"resourceType":"ValueSet","url":"x"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("b.json"), br#"{"resourceType":"CodeSystem"}"#).unwrap();
        std::fs::write(dir.join("notes.txt"), b"not read").unwrap();
        let mut seen = 0;
        let scan = for_each_resource(&dir, &["ValueSet"], &mut |_, _| {
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((scan.resources, scan.matched, seen), (2, 1, 1));
        std::fs::write(dir.join("c.json"), b"{ not json").unwrap();
        let err = for_each_resource(&dir, &["ValueSet"], &mut |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("c.json"), "{err}");
        assert!(matches!(err, TerminologyError::Json { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = for_each_resource(&dir, &["ValueSet"], &mut |_, _| Ok(())).unwrap_err();
        assert!(matches!(missing, TerminologyError::Read { .. }));
    }
}
