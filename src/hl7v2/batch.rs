//! Files of messages: bytes in, one [`RawMessage`] per MSH out.
//!
//! A file may hold one message, many back to back, or FHS/BHS/BTS/FTS
//! batches, with `\r`, `\n` or `\r\n` line ends (mixed), blank lines and byte
//! order marks. Envelope segments are reported, their counts checked (a
//! mismatch is a warning: the messages themselves are fine), and lines that
//! belong to no message are reported as stray, never silently dropped.
//! Not here: parsing the messages (`parse`).

use serde::Serialize;

use super::error::preview;
use super::parse::{lines, strip_bom};

/// One message's bytes and where it sits in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage<'a> {
    /// 0-based position among the file's messages.
    pub index: usize,
    /// Byte offset of its MSH in the input.
    pub byte_offset: usize,
    /// 1-based line of its MSH in the input.
    pub line: usize,
    /// From `MSH` to the end of its last segment (no trailing terminator).
    pub bytes: &'a [u8],
    /// 0-based batch (BHS) it belongs to, if any.
    pub batch: Option<usize>,
}

/// Which envelope segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EnvelopeKind {
    FileHeader,
    BatchHeader,
    BatchTrailer,
    FileTrailer,
}

/// An FHS, BHS, BTS or FTS segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSegment<'a> {
    pub kind: EnvelopeKind,
    pub line: usize,
    pub byte_offset: usize,
    pub raw: &'a [u8],
}

/// Something about the file that is not an error in any one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BatchWarning {
    /// BTS-1 or FTS-1 does not match what the file holds.
    CountMismatch {
        segment: &'static str,
        line: usize,
        declared: u64,
        actual: u64,
    },
    /// BTS-1/FTS-1 is not a number.
    BadCount {
        segment: &'static str,
        line: usize,
        value: String,
    },
    /// A line outside any message (before the first MSH, or after a trailer).
    StrayLine {
        line: usize,
        byte_offset: usize,
        preview: String,
    },
}

/// Everything found in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch<'a> {
    pub messages: Vec<RawMessage<'a>>,
    pub envelope: Vec<EnvelopeSegment<'a>>,
    pub warnings: Vec<BatchWarning>,
}

/// The messages of a file (see [`split_batch`] for envelope and warnings).
pub fn split_messages(bytes: &[u8]) -> Vec<RawMessage<'_>> {
    split_batch(bytes).messages
}

struct Open {
    index: usize,
    start: usize,
    end: usize,
    line: usize,
}

/// Split a file into messages and report its envelope.
pub fn split_batch(input: &[u8]) -> Batch<'_> {
    let bom = input.len() - strip_bom(input).len();
    let bytes = &input[bom..];
    let mut out = Batch::default();
    let mut open: Option<Open> = None;
    let mut field_sep = b'|';
    let mut batch_no: Option<usize> = None;
    let mut in_batch_count = 0u64;
    let mut batches = 0u64;
    let mut closed = false;

    for (start, end, line) in lines(bytes) {
        let mut s = start;
        if bytes[s..end].starts_with(b"\xEF\xBB\xBF") {
            s += 3;
        }
        let seg = &bytes[s..end];
        let id = seg.get(..3).unwrap_or(seg);
        let kind = match id {
            b"FHS" => Some(EnvelopeKind::FileHeader),
            b"BHS" => Some(EnvelopeKind::BatchHeader),
            b"BTS" => Some(EnvelopeKind::BatchTrailer),
            b"FTS" => Some(EnvelopeKind::FileTrailer),
            _ => None,
        };
        if (id == b"MSH" || kind.is_some())
            && let Some(o) = open.take()
        {
            push_message(&mut out, bytes, bom, o, batch_no);
        }
        if id == b"MSH" {
            if let Some(&b) = seg.get(3) {
                field_sep = b;
            }
            open = Some(Open {
                index: out.messages.len(),
                start: s,
                end,
                line,
            });
            in_batch_count += 1;
            closed = false;
            continue;
        }
        if let Some(kind) = kind {
            match kind {
                EnvelopeKind::FileHeader | EnvelopeKind::BatchHeader => {
                    if let Some(&b) = seg.get(3) {
                        field_sep = b;
                    }
                }
                _ => {}
            }
            match kind {
                EnvelopeKind::BatchHeader => {
                    batch_no = Some(batch_no.map_or(0, |n| n + 1));
                    batches += 1;
                    in_batch_count = 0;
                    closed = false;
                }
                EnvelopeKind::BatchTrailer => {
                    check_count(&mut out, "BTS", seg, field_sep, line, in_batch_count);
                    if batch_no.is_none() {
                        // A trailer without header still closes one batch.
                        batches += 1;
                    }
                    closed = true;
                }
                EnvelopeKind::FileTrailer => {
                    check_count(&mut out, "FTS", seg, field_sep, line, batches);
                    closed = true;
                }
                EnvelopeKind::FileHeader => closed = false,
            }
            out.envelope.push(EnvelopeSegment {
                kind,
                line,
                byte_offset: bom + s,
                raw: seg,
            });
            continue;
        }
        match open.as_mut() {
            Some(o) if !closed => o.end = end,
            _ => out.warnings.push(BatchWarning::StrayLine {
                line,
                byte_offset: bom + s,
                preview: preview(seg, 40),
            }),
        }
    }
    if let Some(o) = open.take() {
        push_message(&mut out, bytes, bom, o, batch_no);
    }
    out
}

fn push_message<'a>(
    out: &mut Batch<'a>,
    bytes: &'a [u8],
    bom: usize,
    o: Open,
    batch: Option<usize>,
) {
    out.messages.push(RawMessage {
        index: o.index,
        byte_offset: bom + o.start,
        line: o.line,
        bytes: &bytes[o.start..o.end],
        batch,
    });
}

fn check_count(
    out: &mut Batch<'_>,
    segment: &'static str,
    seg: &[u8],
    field_sep: u8,
    line: usize,
    actual: u64,
) {
    let Some(raw) = seg.split(|&b| b == field_sep).nth(1) else {
        return;
    };
    let value = String::from_utf8_lossy(raw);
    let value = value.trim();
    if value.is_empty() {
        return;
    }
    match value.parse::<u64>() {
        Ok(declared) if declared != actual => out.warnings.push(BatchWarning::CountMismatch {
            segment,
            line,
            declared,
            actual,
        }),
        Ok(_) => {}
        Err(_) => out.warnings.push(BatchWarning::BadCount {
            segment,
            line,
            value: value.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_to_back_with_mixed_line_ends_and_bom() {
        let file = b"\xEF\xBB\xBFMSH|^~\\&|A\r\nPID|1\n\nMSH|^~\\&|B\rPID|2\r\r\n";
        let b = split_batch(file);
        assert_eq!(b.messages.len(), 2);
        assert_eq!(b.messages[0].bytes, b"MSH|^~\\&|A\r\nPID|1");
        assert_eq!(b.messages[0].byte_offset, 3);
        assert_eq!(b.messages[0].line, 1);
        assert_eq!(b.messages[1].bytes, b"MSH|^~\\&|B\rPID|2");
        assert_eq!(b.messages[1].line, 4);
        assert!(b.warnings.is_empty());
    }

    #[test]
    fn batch_counts_are_checked() {
        let file = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|1\rPID|1\rMSH|^~\\&|2\rBTS|3\rFTS|1\r";
        let b = split_batch(file);
        assert_eq!(b.messages.len(), 2);
        assert!(b.messages.iter().all(|m| m.batch == Some(0)));
        assert_eq!(b.envelope.len(), 4);
        assert_eq!(
            b.warnings,
            vec![BatchWarning::CountMismatch {
                segment: "BTS",
                line: 6,
                declared: 3,
                actual: 2
            }]
        );
    }

    #[test]
    fn stray_lines_are_reported() {
        let file = b"garbage\nMSH|^~\\&|1\nBTS|1\nPID|lost\n";
        let b = split_batch(file);
        assert_eq!(b.messages.len(), 1);
        assert_eq!(b.messages[0].bytes, b"MSH|^~\\&|1");
        let lines: Vec<usize> = b
            .warnings
            .iter()
            .filter_map(|w| match w {
                BatchWarning::StrayLine { line, .. } => Some(*line),
                _ => None,
            })
            .collect();
        assert_eq!(lines, vec![1, 4]);
    }
}
