//! One run of the key index: an immutable object of entries sorted by
//! `(key, last_updated)`, each saying where one version of a resource lives.
//!
//! In: entries in ascending order ([`RunWriter`]), or byte ranges of a run
//! object ([`Footer::parse`], [`RunTail::parse`], [`RunTail::decode_block`]).
//! Out: the run's bytes; a [`RunTail`] held in memory that answers "may key k
//! be here, and in which block"; decoded blocks. No I/O besides the writer's
//! `std::io::Write`: fetching the footer, the tail and blocks with ranged
//! reads (local disk or S3) is the caller's job, so one format serves both.
//! It does not decide what a lookup means (newest version, tombstones):
//! that is the caller's job too.
//!
//! ```text
//! [block 0][block 1]...[block n-1][block index][bloom][files][meta][footer]
//! 0                               tail_offset ─────── tail ───────▶ FOOTER_LEN
//! ```
//!
//! A reader goes:
//!
//! ```text
//!  footer ──────────▶ tail ───────────────▶ per key: bloom ──▶ block index ──▶ one ranged read
//!  (last FOOTER_LEN    (footer.tail_range(),         may_contain   blocks_for_key   block_range,
//!   bytes)              checksummed, kept in memory)                                open_block + find
//! ```
//!
//! # Layout (integers little-endian)
//!
//! - **Block**: up to [`BLOCK_ENTRIES`] consecutive entries as bit-packed
//!   columns: `count: u16, first_key: u128, distinct: u16, key_bits: u8`;
//!   if `distinct < count` (history mode), a bitmap of `count` bits marking
//!   the entries that start a new key; then each distinct key after the first
//!   as `key - first_key` in `key_bits` bits (keys are random but sorted, so
//!   the block's keys share their top ~log2(run entries / 512) bits). Then
//!   four columns, `last_updated` (sign bit flipped, so it orders as
//!   unsigned), `file`, `row` and `flags`, each `min: u64, scale: u64, bits:
//!   u8` and `(value - min) / scale` per entry in `bits` bits, `scale` being
//!   the values' greatest common divisor (1000 for millisecond timestamps).
//!   Every packed section starts on a byte. Fixed widths let a lookup binary
//!   search the packed keys and decode only the entries it returns. The
//!   block is stored as a zstd (level 1) frame when that saves at least
//!   1/16 of it, else raw (the index says which): bit-packed random keys
//!   leave zstd little to find.
//! - **Block index**: per block `first_key: u128, first_last_updated: i64,
//!   len: u32, count: u16, flags: u8, checksum: u32` ([`INDEX_ENTRY_LEN`]
//!   bytes; flag bit 0: the block's first key continues from the previous
//!   block, bit 1: the block is zstd-compressed; the checksum is the low half
//!   of the xxh3-64 of the stored bytes), then the run's last `(key: u128, last_updated: i64)`. Blocks lie
//!   back to back from offset 0, so offsets are the running sum of lengths.
//! - **Bloom**: [`Bloom::to_bytes`] over the run's distinct keys.
//! - **Files**: `count: u32`, then per path `len: u32` and UTF-8 bytes.
//! - **Meta**: [`RunMeta`] as `version: u8 (1), mode: u8,
//!   table_version_from: i64, table_version_to: i64, created_micros: i64`.
//! - **Footer** ([`FOOTER_LEN`] bytes): `entries, blocks, tail_offset,
//!   index_len, bloom_len, files_len, meta_len, tail_checksum` (`u64` each;
//!   the checksum is the xxh3-64 of the tail), `footer_checksum: u64` (xxh3-64
//!   of the 64 bytes before it), `version: u32`, magic `FLKIRUN1`. Version and
//!   magic sit at the very end so a reader of any version finds them.
//!
//! Nothing read is trusted before it is checked: a torn or corrupt footer or
//! tail fails a checksum, a corrupt block fails its checksum in the index, and
//! the decoders check every length before slicing or allocating, so bad bytes
//! give a [`RunError`], never a panic or an unbounded allocation.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64;

use super::bloom::{Bloom, BloomError, DEFAULT_BITS_PER_KEY};

/// Entries per block; every block but the last is full.
pub const BLOCK_ENTRIES: usize = 512;
/// The run format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The last 8 bytes of every run object.
pub const MAGIC: [u8; 8] = *b"FLKIRUN1";
/// The footer's fixed length: eight `u64` fields, the footer checksum, the
/// version and the magic.
pub const FOOTER_LEN: usize = 8 * 8 + 8 + 4 + MAGIC.len();
/// One block's entry in the block index.
pub const INDEX_ENTRY_LEN: usize = 16 + 8 + 4 + 2 + 1 + 4;

/// The run's last `(key, last_updated)`, after the index entries.
const INDEX_TRAILER_LEN: usize = 16 + 8;
const META_LEN: usize = 2 + 3 * 8;
const META_VERSION: u8 = 1;
const ZSTD_LEVEL: i32 = 1;
/// Block index flag: the block's first key is the previous block's last key.
const CONTINUES: u8 = 1;
/// Block index flag: the block is a zstd frame, not the raw block.
const COMPRESSED: u8 = 2;
/// Zstd is kept for a block only if it saves at least 1/16 of the raw size.
const MIN_SAVING: usize = 16;
/// Maps `i64` onto `u64` preserving order.
const SIGN: u64 = 1 << 63;

/// Where one version of one resource lives. Runs are sorted by
/// `(key, last_updated)`, which the derived order compares first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// xxh3-128 of the resource id.
    pub key: u128,
    /// `meta.lastUpdated` in UTC microseconds.
    pub last_updated: i64,
    /// Index into the run's file list ([`RunTail::files`]); unchecked
    /// (0 by convention) for tombstones.
    pub file: u32,
    /// 0-based physical row position in that Parquet file.
    pub row: u32,
    /// [`Entry::SUBSETTED`] and [`Entry::TOMBSTONE`]; no other bits.
    pub flags: u8,
}

impl Entry {
    /// The row holds a subset of the resource (`meta.tag` SUBSETTED).
    pub const SUBSETTED: u8 = 1;
    /// The id was deleted at `last_updated`; `file` and `row` carry no meaning.
    pub const TOMBSTONE: u8 = 2;
    const KNOWN_FLAGS: u8 = Self::SUBSETTED | Self::TOMBSTONE;

    pub fn is_subsetted(&self) -> bool {
        self.flags & Self::SUBSETTED != 0
    }

    pub fn is_tombstone(&self) -> bool {
        self.flags & Self::TOMBSTONE != 0
    }

    fn position(&self) -> (u128, i64) {
        (self.key, self.last_updated)
    }
}

/// How many entries a run holds per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// One entry per key: the newest version.
    Current,
    /// One entry per version.
    History,
}

/// What the caller records about a run; stored verbatim in the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMeta {
    pub table_version_from: i64,
    pub table_version_to: i64,
    pub created_micros: i64,
    pub mode: RunMode,
}

impl RunMeta {
    fn encode(&self, out: &mut Vec<u8>) {
        let mode = match self.mode {
            RunMode::Current => 0u8,
            RunMode::History => 1,
        };
        out.extend_from_slice(&[META_VERSION, mode]);
        out.extend_from_slice(&self.table_version_from.to_le_bytes());
        out.extend_from_slice(&self.table_version_to.to_le_bytes());
        out.extend_from_slice(&self.created_micros.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = Reader(bytes);
        if r.u8()? != META_VERSION {
            return Err("unknown meta version");
        }
        let mode = match r.u8()? {
            0 => RunMode::Current,
            1 => RunMode::History,
            _ => return Err("unknown run mode"),
        };
        let meta = RunMeta {
            table_version_from: r.i64()?,
            table_version_to: r.i64()?,
            created_micros: r.i64()?,
            mode,
        };
        r.finish()?;
        Ok(meta)
    }
}

/// The part of a run object an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The whole object (its length).
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "only a run read whole (tests) checks it")
    )]
    Object,
    Footer,
    /// The tail as a whole (its length and checksum).
    Tail,
    BlockIndex,
    Files,
    Meta,
    Block(usize),
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Object => f.write_str("object"),
            Section::Footer => f.write_str("footer"),
            Section::Tail => f.write_str("tail"),
            Section::BlockIndex => f.write_str("block index"),
            Section::Files => f.write_str("file list"),
            Section::Meta => f.write_str("meta"),
            Section::Block(block) => write!(f, "block {block}"),
        }
    }
}

/// Errors writing or reading a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("writing run: {0}")]
    Io(#[from] io::Error),
    #[error(
        "entry ({key:032x}, {last_updated}) pushed after ({prev_key:032x}, {prev_last_updated}): \
         entries must ascend by (key, last_updated)"
    )]
    OutOfOrder {
        key: u128,
        last_updated: i64,
        prev_key: u128,
        prev_last_updated: i64,
    },
    #[error("entry ({key:032x}, {last_updated}) pushed twice")]
    Duplicate { key: u128, last_updated: i64 },
    #[error("entry for key {key:032x} has unknown flag bits {flags:#04x}")]
    UnknownFlags { key: u128, flags: u8 },
    #[error("an entry refers to file {file}, but the run lists {files} files")]
    FileOutOfRange { file: u32, files: usize },
    #[error("a current-mode run holds one entry per key, but {entries} entries carry {keys} keys")]
    ModeMismatch { entries: u64, keys: u64 },
    #[error("{what} is too large for the run format")]
    TooLarge { what: &'static str },
    #[error("the run writer failed earlier and cannot go on")]
    Poisoned,
    #[error("run format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    Version { found: u32 },
    #[error("corrupt run ({section}): {what}")]
    Corrupt {
        what: &'static str,
        section: Section,
    },
    #[error("corrupt run bloom filter: {0}")]
    Bloom(#[from] BloomError),
    #[error("block {block} does not exist: the run has {blocks} blocks")]
    NoSuchBlock { block: usize, blocks: usize },
}

fn corrupt(section: Section) -> impl Fn(&'static str) -> RunError {
    move |what| RunError::Corrupt { what, section }
}

/// What [`RunWriter::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub entries: u64,
    /// Distinct keys (equals `entries` in current mode).
    pub keys: u64,
    pub blocks: u64,
    /// The whole object.
    pub bytes: u64,
    /// The blocks alone.
    pub block_bytes: u64,
    /// The tail (index, bloom, files, meta), what a reader holds in memory.
    pub tail_bytes: u64,
    pub bloom_bytes: u64,
}

/// One block's place in the object, as the block index records it.
#[derive(Debug, Clone, Copy)]
struct BlockMeta {
    offset: u64,
    len: u32,
    checksum: u32,
    count: u16,
    continues: bool,
    compressed: bool,
}

/// Writes a run: blocks stream to `out` as they fill; the bloom filter and
/// block index (about 1.3 bytes an entry) stay in memory until
/// [`RunWriter::finish`] writes the tail and footer.
///
/// After an I/O error the writer is poisoned: later calls return
/// [`RunError::Poisoned`] and the partial object must be discarded. A push
/// rejected for its order or flags leaves the writer as it was.
pub struct RunWriter<W: Write> {
    out: W,
    bloom: Bloom,
    /// Entries of the block being filled.
    pending: Vec<Entry>,
    firsts: Vec<(u128, i64)>,
    blocks: Vec<BlockMeta>,
    last: Option<(u128, i64)>,
    /// The last key of the last block written, to flag continuing blocks.
    last_written_key: Option<u128>,
    offset: u64,
    entries: u64,
    keys: u64,
    max_file: Option<u32>,
    /// Created with the first block, so `new` cannot fail.
    zstd: Option<zstd::bulk::Compressor<'static>>,
    raw: Vec<u8>,
    compressed: Vec<u8>,
    poisoned: bool,
}

impl<W: Write> RunWriter<W> {
    /// `expected` sizes the bloom filter: an upper bound on the distinct keys
    /// (entries will do). It is folded down to the keys actually pushed at
    /// `finish`; more keys than `expected` only raise its false-positive rate.
    pub fn new(out: W, expected: usize) -> Self {
        RunWriter {
            out,
            bloom: Bloom::with_capacity(expected, DEFAULT_BITS_PER_KEY),
            pending: Vec::with_capacity(BLOCK_ENTRIES),
            firsts: Vec::new(),
            blocks: Vec::new(),
            last: None,
            last_written_key: None,
            offset: 0,
            entries: 0,
            keys: 0,
            max_file: None,
            zstd: None,
            raw: Vec::new(),
            compressed: Vec::new(),
            poisoned: false,
        }
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Adds `entry`. Entries must arrive in strictly ascending
    /// `(key, last_updated)` order; the same pair twice is an error.
    pub fn push(&mut self, entry: Entry) -> Result<(), RunError> {
        if self.poisoned {
            return Err(RunError::Poisoned);
        }
        if entry.flags & !Entry::KNOWN_FLAGS != 0 {
            return Err(RunError::UnknownFlags {
                key: entry.key,
                flags: entry.flags,
            });
        }
        if let Some(prev) = self.last {
            if entry.position() == prev {
                return Err(RunError::Duplicate {
                    key: entry.key,
                    last_updated: entry.last_updated,
                });
            }
            if entry.position() < prev {
                return Err(RunError::OutOfOrder {
                    key: entry.key,
                    last_updated: entry.last_updated,
                    prev_key: prev.0,
                    prev_last_updated: prev.1,
                });
            }
        }
        if self.last.map(|(key, _)| key) != Some(entry.key) {
            self.bloom.insert(entry.key);
            self.keys += 1;
        }
        self.last = Some(entry.position());
        self.entries += 1;
        // A tombstone's file means nothing: it need not be in the file list.
        if !entry.is_tombstone() {
            self.max_file = self.max_file.max(Some(entry.file));
        }
        self.pending.push(entry);
        if self.pending.len() == BLOCK_ENTRIES {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<(), RunError> {
        let result = self.write_block();
        self.poisoned |= result.is_err();
        result
    }

    fn write_block(&mut self) -> Result<(), RunError> {
        let (Some(first), Some(last)) = (self.pending.first(), self.pending.last()) else {
            return Ok(());
        };
        let (first, last_key) = (first.position(), last.key);
        encode_block(&self.pending, &mut self.raw);
        let zstd = match &mut self.zstd {
            Some(zstd) => zstd,
            None => self.zstd.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
        zstd.compress_to_buffer(&self.raw, &mut self.compressed)?;
        let compressed = self.compressed.len() < self.raw.len() - self.raw.len() / MIN_SAVING;
        let stored = if compressed {
            &self.compressed
        } else {
            &self.raw
        };
        let len =
            u32::try_from(stored.len()).map_err(|_| RunError::TooLarge { what: "a block" })?;
        self.out.write_all(stored)?;
        self.blocks.push(BlockMeta {
            offset: self.offset,
            len,
            checksum: xxh3_64(stored) as u32,
            // At most BLOCK_ENTRIES.
            count: self.pending.len() as u16,
            continues: self.last_written_key == Some(first.0),
            compressed,
        });
        self.firsts.push(first);
        self.offset += u64::from(len);
        self.last_written_key = Some(last_key);
        self.pending.clear();
        Ok(())
    }

    /// Writes the last block, the tail and the footer, and flushes `out`.
    /// `files` are the data-file paths that entries' `file` indexes into.
    pub fn finish(mut self, files: &[String], meta: RunMeta) -> Result<(W, RunStats), RunError> {
        if self.poisoned {
            return Err(RunError::Poisoned);
        }
        if let Some(file) = self.max_file
            && file as usize >= files.len()
        {
            return Err(RunError::FileOutOfRange {
                file,
                files: files.len(),
            });
        }
        if meta.mode == RunMode::Current && self.keys != self.entries {
            return Err(RunError::ModeMismatch {
                entries: self.entries,
                keys: self.keys,
            });
        }
        self.flush_block()?;
        self.bloom.shrink_to_fit(self.keys as usize);

        let mut tail = Vec::new();
        for (first, block) in self.firsts.iter().zip(&self.blocks) {
            tail.extend_from_slice(&first.0.to_le_bytes());
            tail.extend_from_slice(&first.1.to_le_bytes());
            tail.extend_from_slice(&block.len.to_le_bytes());
            tail.extend_from_slice(&block.count.to_le_bytes());
            let continues = if block.continues { CONTINUES } else { 0 };
            tail.push(continues | if block.compressed { COMPRESSED } else { 0 });
            tail.extend_from_slice(&block.checksum.to_le_bytes());
        }
        let (last_key, last_updated) = self.last.unwrap_or((0, 0));
        tail.extend_from_slice(&last_key.to_le_bytes());
        tail.extend_from_slice(&last_updated.to_le_bytes());
        let index_len = tail.len();
        self.bloom.write_to(&mut tail);
        let bloom_len = tail.len() - index_len;
        let too_large = |what| move |_| RunError::TooLarge { what };
        tail.extend_from_slice(
            &u32::try_from(files.len())
                .map_err(too_large("the file list"))?
                .to_le_bytes(),
        );
        for file in files {
            let len = u32::try_from(file.len()).map_err(too_large("a file path"))?;
            tail.extend_from_slice(&len.to_le_bytes());
            tail.extend_from_slice(file.as_bytes());
        }
        let files_len = tail.len() - index_len - bloom_len;
        meta.encode(&mut tail);

        let footer = Footer {
            entries: self.entries,
            blocks: self.blocks.len() as u64,
            tail_offset: self.offset,
            index_len: index_len as u64,
            bloom_len: bloom_len as u64,
            files_len: files_len as u64,
            meta_len: META_LEN as u64,
            tail_checksum: xxh3_64(&tail),
        };
        self.out.write_all(&tail)?;
        self.out.write_all(&footer.encode())?;
        self.out.flush()?;
        let stats = RunStats {
            entries: self.entries,
            keys: self.keys,
            blocks: footer.blocks,
            bytes: footer.object_len(),
            block_bytes: self.offset,
            tail_bytes: tail.len() as u64,
            bloom_bytes: bloom_len as u64,
        };
        Ok((self.out, stats))
    }
}

/// The fixed-length end of a run object: where the tail is and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    entries: u64,
    blocks: u64,
    tail_offset: u64,
    index_len: u64,
    bloom_len: u64,
    files_len: u64,
    meta_len: u64,
    tail_checksum: u64,
}

impl Footer {
    fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        let fields = [
            self.entries,
            self.blocks,
            self.tail_offset,
            self.index_len,
            self.bloom_len,
            self.files_len,
            self.meta_len,
            self.tail_checksum,
        ];
        for (slot, field) in out.chunks_exact_mut(8).zip(fields) {
            slot.copy_from_slice(&field.to_le_bytes());
        }
        let checksum = xxh3_64(&out[..64]);
        out[64..72].copy_from_slice(&checksum.to_le_bytes());
        out[72..76].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[76..].copy_from_slice(&MAGIC);
        out
    }

    /// Parses the footer from the last [`FOOTER_LEN`] bytes of `last` (which
    /// may be a longer suffix of the object, as a speculative read returns).
    /// Callers should compare [`Footer::object_len`] with the object's size.
    pub fn parse(last: &[u8]) -> Result<Footer, RunError> {
        let bad = corrupt(Section::Footer);
        let Some(start) = last.len().checked_sub(FOOTER_LEN) else {
            return Err(bad("object is shorter than a footer"));
        };
        let bytes: &[u8; FOOTER_LEN] = last[start..].try_into().expect("FOOTER_LEN bytes");
        let word =
            |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        let footer = Footer {
            entries: word(0),
            blocks: word(1),
            tail_offset: word(2),
            index_len: word(3),
            bloom_len: word(4),
            files_len: word(5),
            meta_len: word(6),
            tail_checksum: word(7),
        };
        let checksum = word(8);
        let version = u32::from_le_bytes(bytes[72..76].try_into().expect("4 bytes"));
        if bytes[76..] != MAGIC {
            return Err(bad("magic is not FLKIRUN1"));
        }
        if version != FORMAT_VERSION {
            return Err(RunError::Version { found: version });
        }
        if checksum != xxh3_64(&bytes[..64]) {
            return Err(bad("footer checksum mismatch"));
        }
        if footer.blocks > footer.entries
            || footer.entries.div_ceil(BLOCK_ENTRIES as u64) > footer.blocks
        {
            return Err(bad("block count does not fit the entry count"));
        }
        let index_len = footer
            .blocks
            .checked_mul(INDEX_ENTRY_LEN as u64)
            .and_then(|n| n.checked_add(INDEX_TRAILER_LEN as u64));
        if index_len != Some(footer.index_len) {
            return Err(bad("block index length does not fit the block count"));
        }
        if footer.meta_len != META_LEN as u64 {
            return Err(bad("meta length is not the v1 length"));
        }
        let end = [
            footer.index_len,
            footer.bloom_len,
            footer.files_len,
            footer.meta_len,
        ]
        .into_iter()
        .try_fold(footer.tail_offset, u64::checked_add)
        .and_then(|end| end.checked_add(FOOTER_LEN as u64));
        if end.is_none_or(|end| usize::try_from(end).is_err()) {
            return Err(bad("section lengths overflow"));
        }
        Ok(footer)
    }

    /// The byte range of the tail (block index through meta) in the object.
    pub fn tail_range(&self) -> Range<u64> {
        self.tail_offset..self.tail_offset + self.tail_len()
    }

    fn tail_len(&self) -> u64 {
        self.index_len + self.bloom_len + self.files_len + self.meta_len
    }

    /// The length of the whole object this footer ends.
    pub fn object_len(&self) -> u64 {
        self.tail_range().end + FOOTER_LEN as u64
    }

    #[cfg(test)]
    pub fn entries(&self) -> u64 {
        self.entries
    }

    #[cfg(test)]
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
}

/// A run's tail, parsed and checked: what a reader keeps in memory to route
/// lookups to blocks.
#[derive(Debug, Clone)]
pub struct RunTail {
    pub meta: RunMeta,
    /// The data-file paths entries' `file` indexes into.
    pub files: Vec<String>,
    bloom: Bloom,
    /// Each block's first `(key, last_updated)`, ascending.
    firsts: Vec<(u128, i64)>,
    blocks: Vec<BlockMeta>,
    /// The run's last `(key, last_updated)` (meaningless when empty).
    last: (u128, i64),
    entries: u64,
}

impl RunTail {
    /// `tail` = the bytes of `footer.tail_range()`, verified against the
    /// footer's checksum before anything in it is read.
    pub fn parse(footer: &Footer, tail: &[u8]) -> Result<RunTail, RunError> {
        let bad = corrupt(Section::Tail);
        if tail.len() as u64 != footer.tail_len() {
            return Err(bad("tail length differs from the footer's"));
        }
        if xxh3_64(tail) != footer.tail_checksum {
            return Err(bad("tail checksum mismatch"));
        }
        // Footer::parse checked these sum to less than usize::MAX.
        let (index, rest) = tail.split_at(footer.index_len as usize);
        let (bloom, rest) = rest.split_at(footer.bloom_len as usize);
        let (files, meta) = rest.split_at(footer.files_len as usize);

        let BlockIndex {
            firsts,
            blocks,
            last,
        } = parse_index(index, footer)?;
        let bloom = Bloom::from_bytes(bloom)?;
        let files = parse_files(files).map_err(corrupt(Section::Files))?;
        let meta = RunMeta::decode(meta).map_err(corrupt(Section::Meta))?;
        Ok(RunTail {
            meta,
            files,
            bloom,
            firsts,
            blocks,
            last,
            entries: footer.entries,
        })
    }

    /// False only if no entry of `key` is in the run.
    #[inline]
    pub fn may_contain(&self, key: u128) -> bool {
        self.bloom.may_contain(key)
    }

    /// The block that would hold `(key, last_updated)`: the last block
    /// starting at or before it. None if every block starts after it.
    pub fn block_for(&self, key: u128, last_updated: i64) -> Option<usize> {
        let after = self
            .firsts
            .partition_point(|&first| first <= (key, last_updated));
        after.checked_sub(1)
    }

    /// The blocks that hold `key`'s entries if it has any: one block, or in
    /// history mode several when its versions span a block boundary. Empty
    /// if `key` is outside the run's key range.
    pub fn blocks_for_key(&self, key: u128) -> Range<usize> {
        let Some(&(first, _)) = self.firsts.first() else {
            return 0..0;
        };
        if key < first || key > self.last.0 {
            return 0..0;
        }
        let lo = self.firsts.partition_point(|&(k, _)| k < key);
        let hi = self.firsts.partition_point(|&(k, _)| k <= key);
        if lo == hi {
            // No block starts with `key`; lo >= 1 because key > first.
            return lo - 1..lo;
        }
        // Blocks lo..hi start with `key`; the one before holds earlier
        // versions only if the index says `key` continues into block lo.
        let start = if self.blocks[lo].continues {
            lo - 1
        } else {
            lo
        };
        start..hi
    }

    /// The byte range of `block` in the run object.
    ///
    /// # Panics
    /// If `block >= self.blocks()`.
    pub fn block_range(&self, block: usize) -> Range<u64> {
        let meta = &self.blocks[block];
        meta.offset..meta.offset + u64::from(meta.len)
    }

    /// Checks `bytes` (exactly [`RunTail::block_range`] of `block`) against
    /// the block index and opens the block for lookups, decompressing it if
    /// it was stored compressed. Lookups in the view decode only what they
    /// return.
    pub fn open_block<'a>(&self, block: usize, bytes: &'a [u8]) -> Result<BlockView<'a>, RunError> {
        let Some(meta) = self.blocks.get(block) else {
            return Err(RunError::NoSuchBlock {
                block,
                blocks: self.blocks.len(),
            });
        };
        let bad = corrupt(Section::Block(block));
        if bytes.len() != meta.len as usize {
            return Err(bad("block length differs from the index"));
        }
        if xxh3_64(bytes) as u32 != meta.checksum {
            return Err(bad("block checksum mismatch"));
        }
        let count = usize::from(meta.count);
        let raw = if meta.compressed {
            Cow::Owned(
                decompress(bytes, raw_bound(count))
                    .map_err(|_| bad("block does not decompress"))?,
            )
        } else {
            Cow::Borrowed(bytes)
        };
        let view = BlockView::parse(raw, block, count, self.files.len()).map_err(&bad)?;
        if view.entry(0)?.position() != self.firsts[block] {
            return Err(bad("first entry differs from the index"));
        }
        Ok(view)
    }

    /// Decodes all of `block` from `bytes` (exactly its
    /// [`RunTail::block_range`]): its entries in ascending order, every field
    /// checked, and checked against the block index.
    pub fn decode_block(&self, block: usize, bytes: &[u8]) -> Result<Vec<Entry>, RunError> {
        let mut entries = Vec::new();
        self.decode_block_into(block, bytes, &mut entries)?;
        Ok(entries)
    }

    /// [`RunTail::decode_block`] into a reused buffer (cleared first).
    pub fn decode_block_into(
        &self,
        block: usize,
        bytes: &[u8],
        entries: &mut Vec<Entry>,
    ) -> Result<(), RunError> {
        entries.clear();
        self.open_block(block, bytes)?.decode_into(entries)?;
        // The entries must end before the next block's first (or at the run's last).
        let last = entries.last().map(Entry::position);
        let fits = match (self.firsts.get(block + 1), self.blocks.get(block + 1)) {
            (Some(&next), Some(next_meta)) => {
                last.is_some_and(|last| last < next && (last.0 == next.0) == next_meta.continues)
            }
            _ => last == Some(self.last),
        };
        if !fits {
            entries.clear();
            return Err(corrupt(Section::Block(block))(
                "last entry does not fit the index",
            ));
        }
        Ok(())
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    #[cfg(test)]
    /// The first and last `(key, last_updated)` in the run; None if empty.
    pub fn key_range(&self) -> Option<std::ops::RangeInclusive<(u128, i64)>> {
        self.firsts.first().map(|&first| first..=self.last)
    }

    /// Bytes the tail holds in memory (bloom bits, block index, file paths).
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.bloom.memory_bytes()
            + self.firsts.capacity() * size_of::<(u128, i64)>()
            + self.blocks.capacity() * size_of::<BlockMeta>()
            + self.files.capacity() * size_of::<String>()
            + self.files.iter().map(String::capacity).sum::<usize>()
    }
}

#[cfg(test)]
/// Checks a run held whole in memory: footer, object length and tail.
pub fn open(run_bytes: &[u8]) -> Result<RunTail, RunError> {
    let footer = Footer::parse(run_bytes)?;
    if footer.object_len() != run_bytes.len() as u64 {
        return Err(corrupt(Section::Object)(
            "object length differs from the footer's",
        ));
    }
    let range = footer.tail_range();
    // object_len == run_bytes.len(), so the range is in bounds.
    RunTail::parse(
        &footer,
        &run_bytes[range.start as usize..range.end as usize],
    )
}

#[cfg(test)]
/// For tests and small runs: the entries of `key` in a run held whole in
/// memory, ascending by `last_updated`.
pub fn find(tail: &RunTail, run_bytes: &[u8], key: u128) -> Result<Vec<Entry>, RunError> {
    let mut found = Vec::new();
    if !tail.may_contain(key) {
        return Ok(found);
    }
    for block in tail.blocks_for_key(key) {
        let range = tail.block_range(block);
        let bytes = usize::try_from(range.start)
            .ok()
            .zip(usize::try_from(range.end).ok())
            .and_then(|(start, end)| run_bytes.get(start..end))
            .ok_or_else(|| corrupt(Section::Block(block))("object ends before the block"))?;
        tail.open_block(block, bytes)?.find_into(key, &mut found)?;
    }
    Ok(found)
}

#[cfg(test)]
/// The entries of `key` in a decoded (sorted) block.
pub fn entries_of(block: &[Entry], key: u128) -> &[Entry] {
    let start = block.partition_point(|e| e.key < key);
    let end = start + block[start..].partition_point(|e| e.key == key);
    &block[start..end]
}

/// The block index as parsed; see [`RunTail`]'s fields of the same names.
struct BlockIndex {
    firsts: Vec<(u128, i64)>,
    blocks: Vec<BlockMeta>,
    last: (u128, i64),
}

fn parse_index(index: &[u8], footer: &Footer) -> Result<BlockIndex, RunError> {
    let bad = corrupt(Section::BlockIndex);
    // The footer tied the index length to the block count, and the tail
    // length to the bytes at hand, so this allocation is bounded by them.
    let count = footer.blocks as usize;
    let mut firsts = Vec::with_capacity(count);
    let mut blocks: Vec<BlockMeta> = Vec::with_capacity(count);
    let mut r = Reader(index);
    let (mut offset, mut entries) = (0u64, 0u64);
    for _ in 0..count {
        let first = (r.u128().map_err(&bad)?, r.i64().map_err(&bad)?);
        let len = r.u32().map_err(&bad)?;
        let entry_count = r.u16().map_err(&bad)?;
        let flags = r.u8().map_err(&bad)?;
        let checksum = r.u32().map_err(&bad)?;
        let continues = flags & CONTINUES != 0;
        let compressed = flags & COMPRESSED != 0;
        if entry_count == 0 || usize::from(entry_count) > BLOCK_ENTRIES {
            return Err(bad("block entry count outside 1..=512"));
        }
        if flags & !(CONTINUES | COMPRESSED) != 0 {
            return Err(bad("unknown block flags"));
        }
        if len == 0 {
            return Err(bad("empty block"));
        }
        match firsts.last() {
            None if continues => return Err(bad("first block continues a previous one")),
            Some(&prev) if first <= prev => return Err(bad("blocks out of order")),
            Some(&(prev_key, _)) if first.0 == prev_key && !continues => {
                return Err(bad(
                    "block starts inside a key but is not flagged to continue it",
                ));
            }
            _ => {}
        }
        firsts.push(first);
        blocks.push(BlockMeta {
            offset,
            len,
            checksum,
            count: entry_count,
            continues,
            compressed,
        });
        offset = offset
            .checked_add(u64::from(len))
            .ok_or_else(|| bad("block lengths overflow"))?;
        entries += u64::from(entry_count);
    }
    let last = (r.u128().map_err(&bad)?, r.i64().map_err(&bad)?);
    r.finish().map_err(&bad)?;
    if entries != footer.entries {
        return Err(bad("block entry counts do not sum to the footer's"));
    }
    if offset != footer.tail_offset {
        return Err(bad("block lengths do not sum to the tail offset"));
    }
    if firsts.last().is_some_and(|&first| last < first) {
        return Err(bad("last entry precedes the last block"));
    }
    Ok(BlockIndex {
        firsts,
        blocks,
        last,
    })
}

fn parse_files(bytes: &[u8]) -> Result<Vec<String>, &'static str> {
    let mut r = Reader(bytes);
    let count = r.u32()? as usize;
    // Each path takes at least its 4-byte length: no allocation beyond that.
    if count > r.0.len() / 4 {
        return Err("more paths than the section can hold");
    }
    let mut files = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u32()? as usize;
        let path = std::str::from_utf8(r.take(len)?).map_err(|_| "a path is not UTF-8")?;
        files.push(path.to_owned());
    }
    r.finish()?;
    Ok(files)
}

/// A block checked against the block index and opened for reading: it
/// decodes entries by position, so a lookup costs a binary search over the
/// packed keys and decodes only the entries it returns.
pub struct BlockView<'a> {
    /// The decompressed block (borrowed when it was stored raw).
    raw: Cow<'a, [u8]>,
    block: usize,
    count: usize,
    /// Distinct keys: `count` in current mode.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "checked when parsed, read by tests")
    )]
    distinct: usize,
    /// Bit `i` set if entry `i` starts a new key; None if all do.
    starts: Option<[u64; BLOCK_ENTRIES / 64]>,
    first: u128,
    key_bits: u32,
    /// Where in `raw` the packed offsets (from `first`) of keys 1.. are.
    keys: Range<usize>,
    /// last_updated (sign flipped), file, row, flags.
    columns: [Column; 4],
    files: usize,
}

/// A frame-of-reference column: value `i` is `min + offset(i) * scale`, the
/// offsets packed in `bits` bits each at `packed` in the raw block.
#[derive(Debug, Clone)]
struct Column {
    min: u64,
    scale: u64,
    bits: u32,
    packed: Range<usize>,
}

impl Column {
    fn value(&self, raw: &[u8], i: usize) -> Result<u64, &'static str> {
        read_bits(&raw[self.packed.clone()], i * self.bits as usize, self.bits)
            .checked_mul(self.scale)
            .and_then(|v| v.checked_add(self.min))
            .ok_or("column value overflows")
    }
}

impl fmt::Debug for BlockView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockView")
            .field("block", &self.block)
            .field("count", &self.count)
            .field("first", &format_args!("{:032x}", self.first))
            .finish_non_exhaustive()
    }
}

impl<'a> BlockView<'a> {
    /// Reads the block's header and column layout, checking that every
    /// section is where and as long as `count` entries need.
    fn parse(
        raw: Cow<'a, [u8]>,
        block: usize,
        count: usize,
        files: usize,
    ) -> Result<Self, &'static str> {
        if count == 0 || count > BLOCK_ENTRIES {
            return Err("entry count outside 1..=512");
        }
        let mut r = Reader(&raw);
        if usize::from(r.u16()?) != count {
            return Err("entry count differs from the index");
        }
        let first = r.u128()?;
        let distinct = usize::from(r.u16()?);
        if distinct == 0 || distinct > count {
            return Err("distinct key count outside 1..=entries");
        }
        let key_bits = u32::from(r.u8()?);
        if key_bits > 128 {
            return Err("key offsets wider than 128 bits");
        }
        let starts = if distinct < count {
            let mut words = [0u64; BLOCK_ENTRIES / 64];
            for (i, &byte) in r.take(count.div_ceil(8))?.iter().enumerate() {
                words[i / 8] |= u64::from(byte) << (8 * (i % 8));
            }
            if words[0] & 1 == 0 {
                return Err("first entry does not start a key");
            }
            let set: u32 = words.iter().map(|w| w.count_ones()).sum();
            let beyond = words.iter().enumerate().any(|(w, &word)| {
                let valid = count.saturating_sub(w * 64).min(64);
                valid < 64 && word >> valid != 0
            });
            if set as usize != distinct || beyond {
                return Err("key bitmap does not match the distinct key count");
            }
            Some(words)
        } else {
            None
        };
        let at = |r: &Reader| raw.len() - r.0.len();
        let start = at(&r);
        r.bits(key_bits, distinct - 1)?;
        let keys = start..at(&r);
        let column = |r: &mut Reader| -> Result<Column, &'static str> {
            let (min, scale, bits) = (r.u64()?, r.u64()?, u32::from(r.u8()?));
            if bits > 64 {
                return Err("column wider than 64 bits");
            }
            if scale == 0 {
                return Err("column scale is zero");
            }
            let start = at(r);
            r.bits(bits, count)?;
            Ok(Column {
                min,
                scale,
                bits,
                packed: start..at(r),
            })
        };
        let columns = [
            column(&mut r)?,
            column(&mut r)?,
            column(&mut r)?,
            column(&mut r)?,
        ];
        r.finish()?;
        Ok(BlockView {
            block,
            count,
            distinct,
            starts,
            first,
            key_bits,
            keys,
            columns,
            files,
            raw,
        })
    }

    #[cfg(test)]
    /// The block's number in the run.
    pub fn block(&self) -> usize {
        self.block
    }

    /// The view with its own copy of the block, to keep (cache) beyond the
    /// bytes it was opened from.
    pub fn into_owned(self) -> BlockView<'static> {
        BlockView {
            raw: Cow::Owned(self.raw.into_owned()),
            ..self
        }
    }

    fn bad(&self) -> impl Fn(&'static str) -> RunError {
        corrupt(Section::Block(self.block))
    }

    /// Distinct key `j` (0-based).
    fn distinct_key(&self, j: usize) -> Result<u128, &'static str> {
        if j == 0 {
            return Ok(self.first);
        }
        let offset = read_wide(
            &self.raw[self.keys.clone()],
            (j - 1) * self.key_bits as usize,
            self.key_bits,
        );
        self.first.checked_add(offset).ok_or("key overflows")
    }

    /// Which distinct key entry `i` has.
    fn key_index(&self, i: usize) -> usize {
        let Some(words) = &self.starts else {
            return i;
        };
        let (word, bit) = (i / 64, i % 64);
        let below: u32 = words[..word].iter().map(|w| w.count_ones()).sum();
        let mask = if bit == 63 { u64::MAX } else { (2 << bit) - 1 };
        (below + (words[word] & mask).count_ones()) as usize - 1
    }

    /// The first entry of distinct key `j`, or `count` past the last.
    fn key_start(&self, j: usize) -> usize {
        let Some(words) = &self.starts else {
            return j.min(self.count);
        };
        let mut rest = j;
        for (w, &word) in words.iter().enumerate() {
            let ones = word.count_ones() as usize;
            if rest < ones {
                let mut word = word;
                for _ in 0..rest {
                    word &= word - 1;
                }
                return w * 64 + word.trailing_zeros() as usize;
            }
            rest -= ones;
        }
        self.count
    }

    fn key_at(&self, i: usize) -> Result<u128, &'static str> {
        self.distinct_key(self.key_index(i))
    }

    fn entry_at(&self, i: usize) -> Result<Entry, &'static str> {
        let [last_updated, file, row, flags] = &self.columns;
        let raw = &self.raw;
        let entry = Entry {
            key: self.key_at(i)?,
            last_updated: (last_updated.value(raw, i)? ^ SIGN) as i64,
            file: u32::try_from(file.value(raw, i)?).map_err(|_| "file index over u32")?,
            row: u32::try_from(row.value(raw, i)?).map_err(|_| "row over u32")?,
            flags: u8::try_from(flags.value(raw, i)?).map_err(|_| "flags over u8")?,
        };
        if entry.flags & !Entry::KNOWN_FLAGS != 0 {
            return Err("unknown entry flags");
        }
        if !entry.is_tombstone() && entry.file as usize >= self.files {
            return Err("file index outside the run's file list");
        }
        Ok(entry)
    }

    /// Entry `i`, its fields checked.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn entry(&self, i: usize) -> Result<Entry, RunError> {
        assert!(i < self.count, "entry {i} of a block of {}", self.count);
        self.entry_at(i).map_err(self.bad())
    }

    /// The positions of `key`'s entries (empty, at where it would be, if none).
    pub fn find(&self, key: u128) -> Result<Range<usize>, RunError> {
        let (mut lo, mut hi) = (0, self.distinct);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.distinct_key(mid).map_err(self.bad())? < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let start = self.key_start(lo);
        if lo == self.distinct || self.distinct_key(lo).map_err(self.bad())? != key {
            return Ok(start..start);
        }
        Ok(start..self.key_start(lo + 1))
    }

    /// Appends `key`'s entries, ascending by `last_updated`.
    pub fn find_into(&self, key: u128, out: &mut Vec<Entry>) -> Result<(), RunError> {
        for i in self.find(key)? {
            out.push(self.entry(i)?);
        }
        Ok(())
    }

    /// Appends every entry, checking each and that they strictly ascend.
    pub fn decode_into(&self, out: &mut Vec<Entry>) -> Result<(), RunError> {
        out.reserve(self.count);
        let mut prev: Option<(Entry, usize)> = None;
        for i in 0..self.count {
            let entry = self.entry(i)?;
            let key_index = self.key_index(i);
            if let Some((prev, prev_index)) = prev {
                if entry.position() <= prev.position() {
                    return Err(self.bad()("entries out of order"));
                }
                if (entry.key != prev.key) != (key_index != prev_index) {
                    return Err(self.bad()("key bitmap disagrees with the keys"));
                }
            }
            prev = Some((entry, key_index));
            out.push(entry);
        }
        Ok(())
    }
}

/// Bits needed for `value` (0 for 0).
fn bits_of(value: u128) -> u32 {
    128 - value.leading_zeros()
}

/// `min: u64, scale: u64, bits: u8` before a column's values.
const COLUMN_HEADER: usize = 8 + 8 + 1;

/// The most raw bytes a block of `count` entries can be.
fn raw_bound(count: usize) -> usize {
    2 + 16
        + 2
        + 1
        + BLOCK_ENTRIES / 8
        + 16 * count.saturating_sub(1)
        + 4 * (COLUMN_HEADER + 8 * count)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Zstd decompression with one context per thread: creating a context costs
/// more than decompressing a block.
fn decompress(bytes: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    thread_local! {
        static ZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    }
    ZSTD.with_borrow_mut(|zstd| {
        let zstd = match zstd {
            Some(zstd) => zstd,
            None => zstd.insert(zstd::bulk::Decompressor::new()?),
        };
        zstd.decompress(bytes, capacity)
    })
}

fn encode_block(entries: &[Entry], raw: &mut Vec<u8>) {
    raw.clear();
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return;
    };
    // Callers pass at most BLOCK_ENTRIES.
    raw.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    raw.extend_from_slice(&first.key.to_le_bytes());
    // Keys are stored once each (history mode repeats them): a bitmap marks
    // the entries that start a new key, when some do not.
    let starts = |i: usize| i == 0 || entries[i].key != entries[i - 1].key;
    let distinct = (0..entries.len()).filter(|&i| starts(i)).count();
    raw.extend_from_slice(&(distinct as u16).to_le_bytes());
    let bits = bits_of(last.key - first.key);
    raw.push(bits as u8);
    if distinct < entries.len() {
        let mut bitmap = vec![0u8; entries.len().div_ceil(8)];
        for i in (0..entries.len()).filter(|&i| starts(i)) {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        raw.extend_from_slice(&bitmap);
    }
    let mut packer = BitWriter::new(raw);
    for i in (1..entries.len()).filter(|&i| starts(i)) {
        packer.push_wide(entries[i].key - first.key, bits);
    }
    packer.finish();
    let mut column: Vec<u64> = entries
        .iter()
        .map(|e| e.last_updated as u64 ^ SIGN)
        .collect();
    put_column(raw, &mut column);
    let columns: [fn(&Entry) -> u64; 3] = [
        |e| u64::from(e.file),
        |e| u64::from(e.row),
        |e| u64::from(e.flags),
    ];
    for value in columns {
        column.clear();
        column.extend(entries.iter().map(value));
        put_column(raw, &mut column);
    }
}

/// Writes `min, scale, bits` and `(value - min) / scale` for each value in
/// `bits` bits; reuses `values` for the offsets.
fn put_column(raw: &mut Vec<u8>, values: &mut [u64]) {
    let min = values.iter().copied().min().unwrap_or(0);
    let scale = values
        .iter()
        .fold(0, |g, &v| match v - min {
            d if g == 1 || (g != 0 && d % g == 0) => g,
            d => gcd(g, d),
        })
        .max(1);
    for v in values.iter_mut() {
        *v = (*v - min) / scale;
    }
    let bits = values
        .iter()
        .map(|&v| bits_of(u128::from(v)))
        .max()
        .unwrap_or(0);
    raw.extend_from_slice(&min.to_le_bytes());
    raw.extend_from_slice(&scale.to_le_bytes());
    raw.push(bits as u8);
    let mut packer = BitWriter::new(raw);
    for &v in values.iter() {
        packer.push(v, bits);
    }
    packer.finish();
}

/// `bits` (<= 64) bits at bit `pos` of `bytes`; bits past the end read as 0.
#[inline]
fn read_bits(bytes: &[u8], pos: usize, bits: u32) -> u64 {
    if bits == 0 {
        return 0;
    }
    let byte = pos / 8;
    let word = match bytes.get(byte..byte + 16) {
        Some(chunk) => u128::from_le_bytes(chunk.try_into().expect("16 bytes")),
        None => {
            let rest = bytes.get(byte..).unwrap_or_default();
            let mut chunk = [0u8; 16];
            chunk[..rest.len().min(16)].copy_from_slice(&rest[..rest.len().min(16)]);
            u128::from_le_bytes(chunk)
        }
    };
    let value = (word >> (pos % 8)) as u64;
    if bits == 64 {
        value
    } else {
        value & ((1 << bits) - 1)
    }
}

/// `bits` (<= 128) bits at bit `pos` of `bytes`.
#[inline]
fn read_wide(bytes: &[u8], pos: usize, bits: u32) -> u128 {
    if bits > 64 {
        u128::from(read_bits(bytes, pos, 64))
            | (u128::from(read_bits(bytes, pos + 64, bits - 64)) << 64)
    } else {
        u128::from(read_bits(bytes, pos, bits))
    }
}

/// Appends values of a fixed bit width, least significant bit first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    used: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter {
            out,
            acc: 0,
            used: 0,
        }
    }

    /// `value` must fit in `bits` (<= 64) bits.
    fn push(&mut self, value: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        self.acc |= value << self.used;
        let total = self.used + bits;
        if total < 64 {
            self.used = total;
            return;
        }
        self.out.extend_from_slice(&self.acc.to_le_bytes());
        // The bits of `value` that did not fit in the word just written.
        self.acc = if self.used == 0 {
            0
        } else {
            value >> (64 - self.used)
        };
        self.used = total - 64;
    }

    fn push_wide(&mut self, value: u128, bits: u32) {
        if bits > 64 {
            self.push(value as u64, 64);
            self.push((value >> 64) as u64, bits - 64);
        } else {
            self.push(value as u64, bits);
        }
    }

    fn finish(self) {
        let bytes = self.used.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
    }
}

/// Little-endian reads that fail, never panic, on short input.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("truncated")?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, &'static str> {
        self.array().map(i64::from_le_bytes)
    }

    fn u128(&mut self) -> Result<u128, &'static str> {
        self.array().map(u128::from_le_bytes)
    }

    /// `n` values of `bits` bits each.
    fn bits(&mut self, bits: u32, n: usize) -> Result<&'a [u8], &'static str> {
        let len = (bits as usize).checked_mul(n).ok_or("truncated")?;
        self.take(len.div_ceil(8))
    }

    fn finish(&self) -> Result<(), &'static str> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// splitmix64: deterministic uniform numbers.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn key(&mut self) -> u128 {
            (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }
    }

    const FILES: usize = 40;
    /// 2026-01-01T00:00:00Z in microseconds.
    const BASE_MICROS: i64 = 1_767_225_600_000_000;
    const THREE_DAYS_MILLIS: u64 = 3 * 86_400 * 1000;

    fn files() -> Vec<String> {
        (0..FILES)
            .map(|i| format!("part-{i:05}-6f1c2a9e-5b1d-4c3a-9d7e-0a1b2c3d4e5f-c000.zstd.parquet"))
            .collect()
    }

    fn meta(mode: RunMode) -> RunMeta {
        RunMeta {
            table_version_from: 3,
            table_version_to: 17,
            created_micros: BASE_MICROS,
            mode,
        }
    }

    /// Current-mode entries shaped like a load: rows ascending within each of
    /// `FILES` files, millisecond timestamps within three days, a few
    /// subsets and tombstones; sorted by key.
    fn current_entries(n: usize, seed: u64) -> Vec<Entry> {
        let mut rng = Rng(seed);
        let per_file = n.div_ceil(FILES).max(1);
        let mut entries: Vec<Entry> = (0..n)
            .map(|i| Entry {
                key: rng.key(),
                last_updated: BASE_MICROS + 1000 * rng.below(THREE_DAYS_MILLIS) as i64,
                file: (i / per_file) as u32,
                row: (i % per_file) as u32,
                flags: match rng.below(100) {
                    0..3 => Entry::SUBSETTED,
                    3 => Entry::TOMBSTONE,
                    _ => 0,
                },
            })
            .collect();
        entries.sort();
        entries
    }

    /// History-mode entries: `keys` keys with 1-5 versions each.
    fn history_entries(keys: usize, seed: u64) -> Vec<Entry> {
        let mut rng = Rng(seed);
        let mut entries = Vec::new();
        for _ in 0..keys {
            let key = rng.key();
            let mut at = BASE_MICROS + 1000 * rng.below(THREE_DAYS_MILLIS) as i64;
            for _ in 0..1 + rng.below(5) {
                entries.push(Entry {
                    key,
                    last_updated: at,
                    file: rng.below(FILES as u64) as u32,
                    row: rng.below(50_000) as u32,
                    flags: 0,
                });
                at += 1000 * (1 + rng.below(86_400_000) as i64);
            }
        }
        entries.sort();
        entries
    }

    /// Decodes a raw (uncompressed) block as `decode_block` would.
    fn decode_raw(
        raw: &[u8],
        count: usize,
        files: usize,
        out: &mut Vec<Entry>,
    ) -> Result<(), RunError> {
        let view = BlockView::parse(Cow::Borrowed(raw), 0, count, files)
            .map_err(corrupt(Section::Block(0)))?;
        view.decode_into(out)
    }

    fn write_run(entries: &[Entry], mode: RunMode) -> (Vec<u8>, RunStats) {
        let mut writer = RunWriter::new(Vec::new(), entries.len());
        for &e in entries {
            writer.push(e).unwrap();
        }
        writer.finish(&files(), meta(mode)).unwrap()
    }

    fn block_bytes<'a>(tail: &RunTail, run: &'a [u8], block: usize) -> &'a [u8] {
        let range = tail.block_range(block);
        &run[range.start as usize..range.end as usize]
    }

    /// Decodes every block and checks that together they are `entries`, and
    /// that the index routes each entry to the block holding it.
    fn check_round_trip(entries: &[Entry], mode: RunMode) -> (Vec<u8>, RunTail) {
        let (run, stats) = write_run(entries, mode);
        assert_eq!(stats.bytes, run.len() as u64);
        assert_eq!(stats.entries, entries.len() as u64);
        let tail = open(&run).unwrap();
        assert_eq!(tail.entries(), entries.len() as u64);
        assert_eq!(tail.files, files());
        assert_eq!(tail.meta, meta(mode));
        assert_eq!(tail.blocks(), entries.len().div_ceil(BLOCK_ENTRIES));

        let mut at = 0;
        for block in 0..tail.blocks() {
            let decoded = tail
                .decode_block(block, block_bytes(&tail, &run, block))
                .unwrap();
            assert_eq!(decoded, entries[at..at + decoded.len()], "block {block}");
            for e in &decoded {
                assert!(tail.may_contain(e.key));
                assert_eq!(tail.block_for(e.key, e.last_updated), Some(block));
                assert!(tail.blocks_for_key(e.key).contains(&block));
            }
            at += decoded.len();
        }
        assert_eq!(at, entries.len());
        (run, tail)
    }

    /// `find` of every key in `keys` returns exactly its entries, and the key
    /// range of `blocks_for_key` covers no block without the key.
    fn check_find(entries: &[Entry], run: &[u8], tail: &RunTail, keys: impl Iterator<Item = u128>) {
        for key in keys {
            let expected = entries_of(entries, key);
            assert_eq!(find(tail, run, key).unwrap(), expected, "key {key:032x}");
            if !expected.is_empty() {
                for block in tail.blocks_for_key(key) {
                    let view = tail
                        .open_block(block, block_bytes(tail, run, block))
                        .unwrap();
                    assert!(
                        !view.find(key).unwrap().is_empty(),
                        "block {block} has no {key:x}"
                    );
                }
            }
        }
    }

    #[test]
    fn round_trip_small_sizes() {
        for n in [0, 1, 2, 511, 512, 513, 1024, 1025] {
            let entries = current_entries(n, n as u64);
            let (run, tail) = check_round_trip(&entries, RunMode::Current);
            check_find(&entries, &run, &tail, entries.iter().map(|e| e.key));
            let mut rng = Rng(99);
            check_find(&entries, &run, &tail, (0..1000).map(|_| rng.key()));
            if n == 0 {
                assert_eq!(tail.key_range(), None);
                assert_eq!(tail.block_for(5, 5), None);
                assert_eq!(tail.blocks_for_key(5), 0..0);
            }
        }
    }

    #[test]
    fn edge_keys() {
        let entries: Vec<Entry> = [(0, i64::MIN), (0, 0), (7, -5), (u128::MAX, i64::MAX)]
            .into_iter()
            .map(|(key, last_updated)| Entry {
                key,
                last_updated,
                file: 0,
                row: u32::MAX,
                flags: Entry::SUBSETTED | Entry::TOMBSTONE,
            })
            .collect();
        let (run, tail) = check_round_trip(&entries, RunMode::History);
        check_find(
            &entries,
            &run,
            &tail,
            [0, 1, 7, 8, u128::MAX - 1, u128::MAX].into_iter(),
        );
        assert_eq!(
            tail.key_range(),
            Some((0, i64::MIN)..=(u128::MAX, i64::MAX))
        );
    }

    #[test]
    fn round_trip_million_current() {
        // A million in release; debug builds (CI) check the same on fewer.
        let n = if cfg!(debug_assertions) {
            200_000
        } else {
            1_000_000
        };
        let entries = current_entries(n, 7);
        let (run, tail) = check_round_trip(&entries, RunMode::Current);
        let mut rng = Rng(8);
        let sample = (0..20_000).map(|_| entries[rng.below(entries.len() as u64) as usize].key);
        check_find(&entries, &run, &tail, sample);

        let absent: Vec<u128> = (0..100_000).map(|_| rng.key()).collect();
        let maybe = absent.iter().filter(|&&k| tail.may_contain(k)).count();
        println!(
            "run: {maybe} of {} absent keys pass the bloom filter",
            absent.len()
        );
        assert!(maybe < absent.len() / 50);
        check_find(&entries, &run, &tail, absent.iter().copied().take(5_000));
    }

    #[test]
    fn round_trip_history() {
        let entries = history_entries(100_000, 9);
        let (run, tail) = check_round_trip(&entries, RunMode::History);
        let spanning = tail.blocks.iter().filter(|b| b.continues).count();
        assert!(spanning > 10, "only {spanning} blocks continue a key");
        // Every key whose versions span a block boundary, and a sample of the rest.
        let mut keys: Vec<u128> = (1..tail.blocks())
            .filter(|&b| tail.blocks[b].continues)
            .map(|b| tail.firsts[b].0)
            .collect();
        keys.extend(entries.iter().step_by(29).map(|e| e.key));
        check_find(&entries, &run, &tail, keys.into_iter());
        let mut rng = Rng(10);
        check_find(&entries, &run, &tail, (0..5_000).map(|_| rng.key()));
        // The bloom holds distinct keys, not entries.
        assert!(tail.bloom.memory_bytes() < 2 * 100_000 * 10 / 8);
    }

    /// A key whose versions fill more than a whole block.
    #[test]
    fn key_spanning_three_blocks() {
        let mut entries = current_entries(300, 11);
        let key = entries[150].key;
        entries.extend((0..1200).map(|i| Entry {
            key,
            last_updated: BASE_MICROS + i,
            file: 1,
            row: i as u32,
            flags: 0,
        }));
        entries.sort();
        entries.dedup_by_key(|e| e.position());
        let (run, tail) = check_round_trip(&entries, RunMode::History);
        assert!(tail.blocks_for_key(key).len() >= 3);
        check_find(&entries, &run, &tail, entries.iter().map(|e| e.key));
    }

    #[test]
    fn push_order_is_enforced() {
        let e = |key, last_updated| Entry {
            key,
            last_updated,
            file: 0,
            row: 0,
            flags: 0,
        };
        let mut writer = RunWriter::new(Vec::new(), 10);
        writer.push(e(5, 10)).unwrap();
        assert!(matches!(
            writer.push(e(5, 10)),
            Err(RunError::Duplicate {
                key: 5,
                last_updated: 10
            })
        ));
        assert!(matches!(
            writer.push(e(5, 9)),
            Err(RunError::OutOfOrder { .. })
        ));
        assert!(matches!(
            writer.push(e(4, 11)),
            Err(RunError::OutOfOrder { .. })
        ));
        assert!(matches!(
            writer.push(Entry {
                flags: 4,
                ..e(6, 0)
            }),
            Err(RunError::UnknownFlags { key: 6, flags: 4 })
        ));
        // Rejected pushes leave the writer usable.
        writer.push(e(5, 11)).unwrap();
        writer.push(e(6, 0)).unwrap();
        assert_eq!(writer.entries(), 3);
        assert!(matches!(
            writer.finish(&files(), meta(RunMode::Current)),
            Err(RunError::ModeMismatch {
                entries: 3,
                keys: 2
            })
        ));

        let mut writer = RunWriter::new(Vec::new(), 10);
        writer
            .push(Entry {
                file: 40,
                ..e(1, 1)
            })
            .unwrap();
        assert!(matches!(
            writer.finish(&files(), meta(RunMode::Current)),
            Err(RunError::FileOutOfRange {
                file: 40,
                files: 40
            })
        ));
    }

    #[test]
    fn io_error_poisons_the_writer() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let entries = current_entries(BLOCK_ENTRIES + 1, 12);
        let mut writer = RunWriter::new(Full, entries.len());
        for &e in &entries[..BLOCK_ENTRIES - 1] {
            writer.push(e).unwrap();
        }
        assert!(matches!(
            writer.push(entries[BLOCK_ENTRIES - 1]),
            Err(RunError::Io(_))
        ));
        assert!(matches!(
            writer.push(entries[BLOCK_ENTRIES]),
            Err(RunError::Poisoned)
        ));
        assert!(matches!(
            writer.finish(&files(), meta(RunMode::Current)),
            Err(RunError::Poisoned)
        ));
    }

    #[test]
    fn expected_too_small_still_works() {
        let entries = current_entries(5_000, 13);
        let mut writer = RunWriter::new(Vec::new(), 10);
        for &e in &entries {
            writer.push(e).unwrap();
        }
        let (run, _) = writer.finish(&files(), meta(RunMode::Current)).unwrap();
        let tail = open(&run).unwrap();
        check_find(&entries, &run, &tail, entries.iter().map(|e| e.key));
    }

    /// Blocks that zstd shrinks (evenly spaced keys leave runs of zero bits)
    /// are stored compressed, and read back the same.
    #[test]
    fn compressible_blocks_are_compressed() {
        let entries: Vec<Entry> = (0..1500u32)
            .map(|i| Entry {
                key: u128::from(i) << 100,
                last_updated: BASE_MICROS,
                file: i % 3,
                row: i,
                flags: 0,
            })
            .collect();
        let (run, tail) = check_round_trip(&entries, RunMode::Current);
        assert!(
            tail.blocks.iter().all(|b| b.compressed),
            "{:?}",
            tail.blocks
        );
        check_find(
            &entries,
            &run,
            &tail,
            entries.iter().map(|e| e.key + 1).chain([u128::MAX]),
        );
        let view = tail
            .open_block(1, block_bytes(&tail, &run, 1))
            .unwrap()
            .into_owned();
        assert_eq!(view.find(entries[600].key).unwrap(), 88..89);
        assert_eq!(view.entry(88).unwrap(), entries[600]);
        for i in 0..run.len() {
            let mut bad = run.clone();
            bad[i] ^= 0x10;
            assert!(read_all(&bad).is_err(), "byte {i}");
        }
    }

    /// A run of two blocks, small enough to corrupt at every position.
    fn small_run() -> (Vec<Entry>, Vec<u8>) {
        let entries = current_entries(600, 14);
        let (run, _) = write_run(&entries, RunMode::Current);
        (entries, run)
    }

    /// Opens `run` and decodes all of its blocks.
    fn read_all(run: &[u8]) -> Result<Vec<Entry>, RunError> {
        let tail = open(run)?;
        let mut all = Vec::new();
        for block in 0..tail.blocks() {
            let range = tail.block_range(block);
            let bytes = run
                .get(range.start as usize..range.end as usize)
                .ok_or_else(|| corrupt(Section::Block(block))("object ends before the block"))?;
            all.extend(tail.decode_block(block, bytes)?);
        }
        Ok(all)
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let (entries, run) = small_run();
        assert_eq!(read_all(&run).unwrap(), entries);
        let tail_start = open(&run)
            .unwrap()
            .blocks
            .last()
            .map_or(0, |b| b.offset + u64::from(b.len));
        for i in 0..run.len() {
            // Every bit pattern of a flip in the tail and footer; one in blocks.
            let flips: &[u8] = if i as u64 >= tail_start {
                &[0x01, 0x80, 0xff]
            } else {
                &[0xff]
            };
            for &flip in flips {
                let mut bad = run.clone();
                bad[i] ^= flip;
                assert!(
                    read_all(&bad).is_err(),
                    "byte {i} ^ {flip:#x} of {}",
                    run.len()
                );
            }
        }
    }

    #[test]
    fn any_truncation_is_detected() {
        let (_, run) = small_run();
        for len in 0..run.len() {
            assert!(open(&run[..len]).is_err(), "truncated to {len}");
            // A reader that trusts only the footer it fetched.
            if let Ok(footer) = Footer::parse(&run[..len]) {
                panic!("footer parsed from {len} bytes: {footer:?}");
            }
        }
        let mut longer = run.clone();
        longer.push(0);
        assert!(open(&longer).is_err());
    }

    #[test]
    fn footer_accepts_a_longer_suffix() {
        let (_, run) = small_run();
        let footer = Footer::parse(&run[run.len() - FOOTER_LEN..]).unwrap();
        assert_eq!(Footer::parse(&run).unwrap(), footer);
        assert_eq!(footer.object_len(), run.len() as u64);
        assert_eq!(footer.entries(), 600);
        assert_eq!(footer.blocks(), 2);
        let range = footer.tail_range();
        let tail = RunTail::parse(&footer, &run[range.start as usize..range.end as usize]).unwrap();
        assert!(matches!(
            tail.decode_block(2, &[]),
            Err(RunError::NoSuchBlock {
                block: 2,
                blocks: 2
            })
        ));
        assert!(matches!(
            tail.decode_block(0, &[]),
            Err(RunError::Corrupt {
                section: Section::Block(0),
                ..
            })
        ));
    }

    #[test]
    fn future_version_is_named() {
        let (_, mut run) = small_run();
        let at = run.len() - 12;
        run[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(open(&run), Err(RunError::Version { found: 2 })));
    }

    proptest::proptest! {
        /// The block decoder behind the checksum: arbitrary edits of a valid
        /// raw block give an error or entries, never a panic.
        #[test]
        fn raw_block_decoder_never_panics(
            edits in proptest::collection::vec((0usize..20_000, proptest::num::u8::ANY), 1..8),
            cut in 0usize..20_000,
            count in 1usize..=BLOCK_ENTRIES,
        ) {
            let entries = current_entries(BLOCK_ENTRIES, 15);
            let mut raw = Vec::new();
            encode_block(&entries[..count], &mut raw);
            for (at, value) in edits {
                let len = raw.len();
                raw[at % len] = value;
            }
            raw.truncate(raw.len() - cut % raw.len());
            let mut out = Vec::new();
            let _ = decode_raw(&raw, count, FILES, &mut out);
        }

        #[test]
        fn raw_block_round_trip(count in 1usize..=BLOCK_ENTRIES, seed in 0u64..1000) {
            let entries = current_entries(count, seed);
            let mut raw = Vec::new();
            encode_block(&entries, &mut raw);
            proptest::prop_assert!(raw.len() <= raw_bound(count));
            let mut out = Vec::new();
            decode_raw(&raw, count, FILES, &mut out).unwrap();
            proptest::prop_assert_eq!(out, entries);
        }
    }

    /// Prints bytes per entry for data shaped like a load; never asserts sizes.
    #[test]
    #[ignore = "a measurement, printed: cargo test --release -- --ignored"]
    fn size_per_entry() {
        let report = |label: &str, entries: &[Entry], mode| {
            let (run, stats) = write_run(entries, mode);
            let n = entries.len() as f64;
            println!(
                "run {label}: {} entries, {} blocks: {:.2} bytes/entry on disk \
                 (blocks {:.2}, tail {:.2} of which bloom {:.2}); raw entry is 33 bytes",
                stats.entries,
                stats.blocks,
                stats.bytes as f64 / n,
                stats.block_bytes as f64 / n,
                stats.tail_bytes as f64 / n,
                stats.bloom_bytes as f64 / n,
            );
            run
        };
        let entries = current_entries(1_000_000, 16);
        let run = report("current, ms timestamps", &entries, RunMode::Current);
        let mut rng = Rng(17);
        let micros: Vec<Entry> = entries
            .iter()
            .map(|e| Entry {
                last_updated: e.last_updated + rng.below(1000) as i64,
                ..*e
            })
            .collect();
        report("current, us timestamps", &micros, RunMode::Current);
        drop(micros);
        report(
            "history, 1-5 versions",
            &history_entries(333_000, 18),
            RunMode::History,
        );
        let tail = open(&run).unwrap();
        println!(
            "run: a 1M-entry tail holds {} bytes in memory ({:.2} bytes/entry)",
            tail.memory_bytes(),
            tail.memory_bytes() as f64 / 1e6
        );
    }

    /// Prints lookup throughput over a 1M-entry run held in memory; timing is
    /// reported, never asserted.
    #[test]
    #[ignore = "a measurement, printed: cargo test --release -- --ignored"]
    fn lookup_speed() {
        let entries = current_entries(1_000_000, 19);
        let (run, _) = write_run(&entries, RunMode::Current);
        let tail = open(&run).unwrap();
        let mut rng = Rng(20);
        let present: Vec<u128> = (0..20_000)
            .map(|_| entries[rng.below(entries.len() as u64) as usize].key)
            .collect();
        let absent: Vec<u128> = (0..200_000).map(|_| rng.key()).collect();

        let start = Instant::now();
        let found: usize = present
            .iter()
            .map(|&k| find(&tail, &run, k).unwrap().len())
            .sum();
        let elapsed = start.elapsed();
        assert_eq!(found, present.len());
        println!(
            "run: present keys, one block opened each: {:.0} keys/s ({:.2} us/key)",
            present.len() as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / present.len() as f64
        );

        let start = Instant::now();
        let found: usize = absent
            .iter()
            .map(|&k| find(&tail, &run, k).unwrap().len())
            .sum();
        let elapsed = start.elapsed();
        assert_eq!(found, 0);
        println!(
            "run: absent keys: {:.0} keys/s",
            absent.len() as f64 / elapsed.as_secs_f64()
        );

        // As a load would: a chunk's keys sorted, each needed block decoded once.
        let mut chunk: Vec<u128> = present
            .iter()
            .copied()
            .chain(absent[..20_000].iter().copied())
            .collect();
        chunk.sort_unstable();
        let start = Instant::now();
        let (mut opened, mut hits) = (0, 0);
        let mut found = Vec::new();
        let mut view: Option<BlockView> = None;
        for &key in &chunk {
            if !tail.may_contain(key) {
                continue;
            }
            for block in tail.blocks_for_key(key) {
                if view.as_ref().is_none_or(|v| v.block() != block) {
                    view = Some(
                        tail.open_block(block, block_bytes(&tail, &run, block))
                            .unwrap(),
                    );
                    opened += 1;
                }
                found.clear();
                view.as_ref().unwrap().find_into(key, &mut found).unwrap();
                hits += found.len();
            }
        }
        let elapsed = start.elapsed();
        assert_eq!(hits, present.len());
        println!(
            "run: a sorted chunk of {} keys (half present) against {} blocks: \
             {opened} blocks opened, {:.0} keys/s",
            chunk.len(),
            tail.blocks(),
            chunk.len() as f64 / elapsed.as_secs_f64()
        );
    }
}
