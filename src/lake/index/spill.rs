//! An external sort of fixed-size records: memory is bounded by one buffer,
//! whatever the number of records. Records collect in memory; a full buffer
//! is sorted and written to a temporary file (a sorted run); at the end the
//! runs (and what is still in memory) are merged, smallest record first.
//!
//! A load's keys and an index rebuild go through here, so neither holds a
//! table's worth of keys in memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use rayon::slice::ParallelSliceMut;

/// A record of `SIZE` bytes with a total order.
pub trait Record: Copy + Ord + Send {
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(bytes: &[u8]) -> Self;
}

/// Records sorted in memory up to `buffer` of them, spilled beyond.
pub struct Spill<R: Record> {
    buffer: Vec<R>,
    limit: usize,
    dir: Option<PathBuf>,
    runs: Vec<PathBuf>,
    count: u64,
}

impl<R: Record> Spill<R> {
    /// Keeps up to `limit` records in memory before it writes a sorted run.
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            limit: limit.max(1),
            dir: None,
            runs: Vec::new(),
            count: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn push(&mut self, record: R) -> io::Result<()> {
        self.buffer.push(record);
        self.count += 1;
        if self.buffer.len() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.buffer.par_sort_unstable();
        let dir = match &self.dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = std::env::temp_dir()
                    .join(format!("fhirlake-spill-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir)?;
                self.dir = Some(dir.clone());
                dir
            }
        };
        let path = dir.join(format!("{:05}.run", self.runs.len()));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let mut bytes = vec![0u8; R::SIZE];
        for record in &self.buffer {
            record.encode(&mut bytes);
            out.write_all(&bytes)?;
        }
        out.flush()?;
        self.buffer.clear();
        self.runs.push(path);
        Ok(())
    }

    /// Every record pushed, in ascending order (equal records all kept).
    /// May be called again (a commit that lost a race resolves once more).
    pub fn sorted(&mut self) -> io::Result<Sorted<'_, R>> {
        self.buffer.par_sort_unstable();
        let mut readers = Vec::with_capacity(self.runs.len());
        for path in &self.runs {
            readers.push(BufReader::with_capacity(256 << 10, File::open(path)?));
        }
        let mut sorted = Sorted {
            memory: self.buffer.iter().peekable(),
            readers,
            heap: BinaryHeap::new(),
            bytes: vec![0u8; R::SIZE],
        };
        for at in 0..sorted.readers.len() {
            sorted.refill(at)?;
        }
        Ok(sorted)
    }
}

impl<R: Record> Drop for Spill<R> {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The merge of a spill's sorted runs.
pub struct Sorted<'s, R: Record> {
    memory: std::iter::Peekable<std::slice::Iter<'s, R>>,
    readers: Vec<BufReader<File>>,
    /// The next record of each run, smallest on top.
    heap: BinaryHeap<Reverse<(R, usize)>>,
    bytes: Vec<u8>,
}

impl<R: Record> Sorted<'_, R> {
    fn refill(&mut self, at: usize) -> io::Result<()> {
        match self.readers[at].read_exact(&mut self.bytes) {
            Ok(()) => {
                self.heap.push(Reverse((R::decode(&self.bytes), at)));
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The next record, or `None` when all are out.
    pub fn next_record(&mut self) -> io::Result<Option<R>> {
        let from_disk = self.heap.peek().map(|Reverse((r, _))| *r);
        let from_memory = self.memory.peek().map(|r| **r);
        match (from_disk, from_memory) {
            (None, None) => Ok(None),
            (Some(d), Some(m)) if m <= d => Ok(self.memory.next().copied()),
            (None, Some(_)) => Ok(self.memory.next().copied()),
            (Some(_), _) => {
                let Reverse((record, at)) = self.heap.pop().expect("peeked");
                self.refill(at)?;
                Ok(Some(record))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Pair(u64, u32);

    impl Record for Pair {
        const SIZE: usize = 12;
        fn encode(&self, out: &mut [u8]) {
            out[..8].copy_from_slice(&self.0.to_le_bytes());
            out[8..].copy_from_slice(&self.1.to_le_bytes());
        }
        fn decode(bytes: &[u8]) -> Self {
            Pair(
                u64::from_le_bytes(bytes[..8].try_into().unwrap()),
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
            )
        }
    }

    #[test]
    fn merges_spilled_runs_and_memory_in_order_whatever_the_buffer() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let records: Vec<Pair> = (0..10_007u32)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                Pair(x % 3000, i)
            })
            .collect();
        let mut expected = records.clone();
        expected.sort();
        for limit in [1, 7, 1000, 100_000] {
            let mut spill = Spill::new(limit);
            for r in &records {
                spill.push(*r).unwrap();
            }
            assert_eq!(spill.len(), records.len() as u64);
            let dir = spill.dir.clone();
            for _ in 0..2 {
                let mut sorted = spill.sorted().unwrap();
                let mut got = Vec::new();
                while let Some(r) = sorted.next_record().unwrap() {
                    got.push(r);
                }
                assert_eq!(got, expected, "buffer of {limit}, read again");
            }
            drop(spill);
            if let Some(dir) = dir {
                assert!(!dir.exists(), "the spill directory is removed");
            }
        }
    }
}
