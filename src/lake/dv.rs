//! Delta deletion vectors: which physical rows of a data file are deleted.
//!
//! The on-disk format is the protocol's ("Deletion Vector Format"): a file
//! opens with a version byte `1`, then holds one or more DVs, each
//!
//! ```text
//!  size (u32, big-endian) = 4 + bitmap bytes | magic 1681511377 (u32, LE) | RoaringTreemap (portable) | CRC-32 of magic+bitmap (u32, BE)
//! ```
//! and a descriptor in the log names it: storage type `u`, `pathOrInlineDv`
//! = the z85 of a UUID (the file is `deletion_vector_<uuid>.bin` in the table
//! directory), the offset of the size field, the size, and the cardinality.
//! Written here rather than with the kernel's writer: its path type cannot
//! be built outside a kernel transaction, and the format is a few lines over
//! `roaring` and `crc32fast`.

use deltalake::kernel::{DeletionVectorDescriptor, StorageType};
use roaring::RoaringTreemap;

const MAGIC: u32 = 1_681_511_377;
const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DvError {
    #[error("deletion vector {path}: {what}")]
    Corrupt { path: String, what: String },
    #[error("deletion vector {path}: storage type {storage:?} is not supported")]
    Unsupported { path: String, storage: String },
}

/// The object name (relative to the table directory) of a DV file.
pub fn file_name(id: uuid::Uuid) -> String {
    format!("deletion_vector_{id}.bin")
}

/// Encodes DVs into one file: the bytes, and each DV's descriptor (in order).
pub fn encode(
    id: uuid::Uuid,
    bitmaps: &[&RoaringTreemap],
) -> (Vec<u8>, Vec<DeletionVectorDescriptor>) {
    let mut out = vec![FORMAT_VERSION];
    let mut descriptors = Vec::with_capacity(bitmaps.len());
    let path = z85::encode(id.as_bytes());
    for bitmap in bitmaps {
        let offset = out.len();
        let mut body = MAGIC.to_le_bytes().to_vec();
        bitmap
            .serialize_into(&mut body)
            .expect("serialising into a Vec cannot fail");
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        descriptors.push(DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: path.clone(),
            offset: Some(offset as i32),
            size_in_bytes: body.len() as i32,
            cardinality: bitmap.len() as i64,
        });
    }
    (out, descriptors)
}

/// Where a descriptor's DV lives: the object name in the table directory and
/// the byte range to read. `None` for an inline DV (it is in the log).
pub fn location(
    descriptor: &DeletionVectorDescriptor,
) -> Result<Option<(String, std::ops::Range<u64>)>, DvError> {
    let path = &descriptor.path_or_inline_dv;
    match descriptor.storage_type {
        StorageType::Inline => Ok(None),
        StorageType::AbsolutePath => Err(DvError::Unsupported {
            path: path.clone(),
            storage: "p".into(),
        }),
        StorageType::UuidRelativePath => {
            if path.len() < 20 || !path.is_char_boundary(path.len() - 20) {
                return Err(corrupt(path, "pathOrInlineDv is shorter than a z85 UUID"));
            }
            let (prefix, encoded) = path.split_at(path.len() - 20);
            let bytes = z85::decode(encoded).map_err(|e| corrupt(path, &format!("z85: {e}")))?;
            let id = uuid::Uuid::from_slice(&bytes).map_err(|e| corrupt(path, &e.to_string()))?;
            let name = if prefix.is_empty() {
                file_name(id)
            } else {
                format!("{prefix}/{}", file_name(id))
            };
            let offset = descriptor.offset.unwrap_or(1).max(0) as u64;
            let len = 4 + descriptor.size_in_bytes.max(0) as u64 + 4;
            Ok(Some((name, offset..offset + len)))
        }
    }
}

fn corrupt(path: &str, what: &str) -> DvError {
    DvError::Corrupt {
        path: path.to_owned(),
        what: what.to_owned(),
    }
}

/// Decodes a DV: `bytes` are the range [`location`] gives (size, magic,
/// bitmap, checksum), or, for an inline DV, the decoded z85 payload.
pub fn decode(
    descriptor: &DeletionVectorDescriptor,
    bytes: &[u8],
) -> Result<RoaringTreemap, DvError> {
    let path = &descriptor.path_or_inline_dv;
    let body = match descriptor.storage_type {
        StorageType::Inline => bytes,
        _ => {
            if bytes.len() < 8 {
                return Err(corrupt(path, "shorter than its header"));
            }
            let size = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
            if size != descriptor.size_in_bytes as usize || bytes.len() < 4 + size + 4 {
                return Err(corrupt(path, "size does not match the descriptor"));
            }
            let body = &bytes[4..4 + size];
            let crc = u32::from_be_bytes(bytes[4 + size..8 + size].try_into().expect("4 bytes"));
            if crc != crc32fast::hash(body) {
                return Err(corrupt(path, "checksum mismatch"));
            }
            body
        }
    };
    if body.len() < 4 || u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) != MAGIC {
        return Err(corrupt(
            path,
            "not a portable RoaringBitmapArray (bad magic)",
        ));
    }
    let bitmap = RoaringTreemap::deserialize_from(&body[4..])
        .map_err(|e| corrupt(path, &format!("bitmap: {e}")))?;
    if bitmap.len() != descriptor.cardinality as u64 {
        return Err(corrupt(path, "cardinality does not match the descriptor"));
    }
    Ok(bitmap)
}

/// The payload of an inline DV (`storageType = i`).
pub fn inline_bytes(descriptor: &DeletionVectorDescriptor) -> Result<Vec<u8>, DvError> {
    z85::decode(&descriptor.path_or_inline_dv)
        .map_err(|e| corrupt(&descriptor.path_or_inline_dv, &format!("z85: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap(rows: &[u64]) -> RoaringTreemap {
        rows.iter().copied().collect()
    }

    #[test]
    fn dvs_round_trip_with_their_descriptors() {
        let id = uuid::Uuid::new_v4();
        let (a, b) = (
            bitmap(&[3, 7]),
            bitmap(&(0..70_000).step_by(3).collect::<Vec<_>>()),
        );
        let (file, descriptors) = encode(id, &[&a, &b]);
        assert_eq!(file[0], 1);
        assert_eq!(descriptors[0].offset, Some(1));
        for (descriptor, expected) in descriptors.iter().zip([&a, &b]) {
            let (name, range) = location(descriptor).unwrap().unwrap();
            assert_eq!(name, file_name(id));
            let bytes = &file[range.start as usize..range.end as usize];
            assert_eq!(&decode(descriptor, bytes).unwrap(), expected);
            assert_eq!(descriptor.cardinality, expected.len() as i64);
        }
        // A flipped byte is caught by the checksum.
        let (_, range) = location(&descriptors[0]).unwrap().unwrap();
        let mut bad = file[range.start as usize..range.end as usize].to_vec();
        bad[9] ^= 1;
        assert!(decode(&descriptors[0], &bad).is_err());
    }

    /// The public DV tables' descriptors and files decode to their cardinalities.
    #[test]
    fn reads_the_dvs_databricks_and_spark_wrote() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/delta-dv");
        let mut seen = 0;
        for table in [
            "table-with-dv-small",
            "with-short-dv",
            "table-with-dv-large",
        ] {
            let log = root.join(table).join("_delta_log");
            for entry in std::fs::read_dir(&log).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    let action: serde_json::Value = serde_json::from_str(line).unwrap();
                    let Some(dv) = action.pointer("/add/deletionVector") else {
                        continue;
                    };
                    let descriptor: DeletionVectorDescriptor =
                        serde_json::from_value(dv.clone()).unwrap();
                    let bitmap = match location(&descriptor).unwrap() {
                        Some((name, range)) => {
                            let file = std::fs::read(root.join(table).join(name)).unwrap();
                            decode(&descriptor, &file[range.start as usize..range.end as usize])
                        }
                        None => decode(&descriptor, &inline_bytes(&descriptor).unwrap()),
                    }
                    .unwrap();
                    assert_eq!(bitmap.len(), descriptor.cardinality as u64);
                    seen += 1;
                }
            }
        }
        assert!(seen >= 5, "DV descriptors read: {seen}");
    }
}
