//! MLLP framing (`0x0B payload 0x1C 0x0D`), without I/O.
//!
//! [`Decoder`] takes bytes as they arrive, in any split, and hands back whole
//! frames. Like tokio-util's `LinesCodec::new_with_max_length`, a frame longer
//! than the limit is an error, not an allocation: the decoder never buffers
//! more than `max_message_bytes`, skips the rest of that frame and carries on
//! with the next one. Bad framing (data before `0x0B`, `0x1C` not followed by
//! `0x0D`, a new `0x0B` inside a frame, a frame cut off at end of stream) is
//! reported with the stream offset and the decoder resynchronises on the
//! next start byte.

use thiserror::Error;

pub const START: u8 = 0x0B;
pub const END: u8 = 0x1C;
pub const CR: u8 = 0x0D;

/// Bytes of a too-long frame kept for its NAK.
const HEAD_KEPT: usize = 1024;

/// A framing problem, with the stream offset (0-based) where it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MllpError {
    #[error(
        "{len} byte(s) of data before the MLLP start byte 0x0B at offset {offset}: the sender is not framing messages"
    )]
    DataBeforeStart { offset: u64, len: u64 },
    #[error(
        "0x1C at offset {offset} is followed by 0x{found:02X}, not 0x0D: the frame was dropped"
    )]
    MissingCarriageReturn { offset: u64, found: u8 },
    #[error(
        "start byte 0x0B at offset {offset} inside an unfinished frame: the previous frame ({len} bytes) lost its end and was dropped"
    )]
    UnexpectedStart { offset: u64, len: usize },
    #[error(
        "frame starting at offset {offset} exceeds the limit of {limit} bytes: it was skipped (raise max_message_bytes if such messages are legitimate)"
    )]
    FrameTooLong { offset: u64, limit: usize },
    #[error("stream ended inside a frame started at offset {offset} ({len} bytes buffered)")]
    IncompleteFrame { offset: u64, len: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for 0x0B; `junk` bytes seen since `junk_start`.
    Idle { junk: u64, junk_start: u64 },
    /// Inside a frame started at `start`.
    InFrame { start: u64 },
    /// Saw 0x1C, expecting 0x0D.
    SawEnd { start: u64 },
    /// Frame over the limit: skipping to its end.
    Discarding { saw_end: bool },
}

/// Frames out of a byte stream.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    state: State,
    frame: Vec<u8>,
    offset: u64,
    /// The start of the last frame dropped as too long (its MSH, for the NAK).
    dropped_head: Vec<u8>,
}

impl Decoder {
    /// A decoder that refuses frames over `max_message_bytes` payload bytes.
    pub fn new(max_message_bytes: usize) -> Self {
        Decoder {
            max: max_message_bytes,
            state: State::Idle {
                junk: 0,
                junk_start: 0,
            },
            frame: Vec::new(),
            offset: 0,
            dropped_head: Vec::new(),
        }
    }

    /// Feed bytes; returns the frames (payloads) and errors completed by them, in order.
    pub fn decode(&mut self, input: &[u8]) -> Vec<Result<Vec<u8>, MllpError>> {
        let mut out = Vec::new();
        for &b in input {
            self.step(b, &mut out);
            self.offset += 1;
        }
        out
    }

    /// End of stream: an unfinished frame (or trailing junk) is an error.
    pub fn finish(&mut self) -> Option<MllpError> {
        let state = std::mem::replace(
            &mut self.state,
            State::Idle {
                junk: 0,
                junk_start: self.offset,
            },
        );
        let len = self.frame.len();
        self.frame = Vec::new();
        match state {
            State::Idle { junk: 0, .. } => None,
            State::Idle { junk, junk_start } => Some(MllpError::DataBeforeStart {
                offset: junk_start,
                len: junk,
            }),
            State::InFrame { start } | State::SawEnd { start } => {
                Some(MllpError::IncompleteFrame { offset: start, len })
            }
            State::Discarding { .. } => Some(MllpError::IncompleteFrame {
                offset: self.offset,
                len: 0,
            }),
        }
    }

    /// The first bytes of the last frame dropped as too long: enough of its
    /// MSH for a NAK that echoes MSH-10.
    pub fn take_dropped_head(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.dropped_head)
    }

    /// Bytes currently buffered (never more than the limit).
    pub fn buffered(&self) -> usize {
        self.frame.len()
    }

    fn begin(&mut self) {
        self.frame.clear();
        self.state = State::InFrame { start: self.offset };
    }

    fn step(&mut self, b: u8, out: &mut Vec<Result<Vec<u8>, MllpError>>) {
        match self.state {
            State::Idle { junk, junk_start } => {
                if b == START {
                    if junk > 0 {
                        out.push(Err(MllpError::DataBeforeStart {
                            offset: junk_start,
                            len: junk,
                        }));
                    }
                    self.begin();
                } else if junk == 0 && (b == b'\r' || b == b'\n') {
                    // Line ends between frames are common and harmless.
                } else {
                    let junk_start = if junk == 0 { self.offset } else { junk_start };
                    self.state = State::Idle {
                        junk: junk + 1,
                        junk_start,
                    };
                }
            }
            State::InFrame { start } => match b {
                END => self.state = State::SawEnd { start },
                START => {
                    out.push(Err(MllpError::UnexpectedStart {
                        offset: self.offset,
                        len: self.frame.len(),
                    }));
                    self.begin();
                }
                _ if self.frame.len() >= self.max => {
                    out.push(Err(MllpError::FrameTooLong {
                        offset: start,
                        limit: self.max,
                    }));
                    self.frame.truncate(HEAD_KEPT);
                    self.dropped_head = std::mem::take(&mut self.frame);
                    self.state = State::Discarding { saw_end: false };
                }
                _ => {
                    if self.frame.capacity() == 0 {
                        self.frame.reserve(self.max.min(4096));
                    }
                    self.frame.push(b);
                }
            },
            State::SawEnd { .. } => {
                if b == CR {
                    out.push(Ok(std::mem::take(&mut self.frame)));
                } else {
                    out.push(Err(MllpError::MissingCarriageReturn {
                        offset: self.offset - 1,
                        found: b,
                    }));
                    self.frame.clear();
                }
                self.state = State::Idle {
                    junk: 0,
                    junk_start: self.offset,
                };
                if b == START {
                    self.begin();
                }
            }
            State::Discarding { saw_end } => {
                self.state = if saw_end && b == CR {
                    State::Idle {
                        junk: 0,
                        junk_start: self.offset,
                    }
                } else {
                    State::Discarding { saw_end: b == END }
                };
            }
        }
    }
}

/// Wrap a payload in an MLLP frame. The payload must not contain 0x1C.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(START);
    out.extend_from_slice(payload);
    out.push(END);
    out.push(CR);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_one_by_one(d: &mut Decoder, bytes: &[u8]) -> Vec<Result<Vec<u8>, MllpError>> {
        bytes.iter().flat_map(|b| d.decode(&[*b])).collect()
    }

    #[test]
    fn frames_survive_any_split() {
        let mut stream = frame(b"MSH|^~\\&|A\rPID|1\r");
        stream.extend(b"\r\n");
        stream.extend(frame(b"MSH|^~\\&|B\r"));
        for chunk in [1, 2, 3, 5, 4096] {
            let mut d = Decoder::new(1024);
            let got: Vec<_> = stream.chunks(chunk).flat_map(|c| d.decode(c)).collect();
            assert_eq!(
                got,
                vec![
                    Ok(b"MSH|^~\\&|A\rPID|1\r".to_vec()),
                    Ok(b"MSH|^~\\&|B\r".to_vec())
                ],
                "chunk {chunk}"
            );
            assert_eq!(d.finish(), None);
        }
    }

    #[test]
    fn oversize_frame_is_skipped_without_buffering_it() {
        let mut d = Decoder::new(8);
        let mut stream = frame(&[b'x'; 100]);
        stream.extend(frame(b"ok"));
        let mut max_buffered = 0;
        let mut got = Vec::new();
        for b in &stream {
            got.extend(d.decode(&[*b]));
            max_buffered = max_buffered.max(d.buffered());
        }
        assert!(max_buffered <= 8);
        assert_eq!(
            got,
            vec![
                Err(MllpError::FrameTooLong {
                    offset: 0,
                    limit: 8
                }),
                Ok(b"ok".to_vec())
            ]
        );
    }

    #[test]
    fn junk_and_bad_ends_are_reported() {
        let mut d = Decoder::new(64);
        let mut stream = b"junk".to_vec();
        stream.extend(frame(b"a"));
        stream.extend([START, b'b', END, b'x']);
        stream.extend([START, b'c', START, b'd', END, CR]);
        stream.extend([START, b'e']);
        let got = feed_one_by_one(&mut d, &stream);
        assert_eq!(
            got,
            vec![
                Err(MllpError::DataBeforeStart { offset: 0, len: 4 }),
                Ok(b"a".to_vec()),
                Err(MllpError::MissingCarriageReturn {
                    offset: 10,
                    found: b'x'
                }),
                Err(MllpError::UnexpectedStart { offset: 14, len: 1 }),
                Ok(b"d".to_vec()),
            ]
        );
        assert_eq!(
            d.finish(),
            Some(MllpError::IncompleteFrame { offset: 18, len: 1 })
        );
    }
}
