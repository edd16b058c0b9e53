//! Differential fuzz target for `qemu_netfilter_stats::decoder::FrameDecoder`.
//!
//! The input bytes choose a decoder configuration, a chunking of a byte
//! stream and resets between chunks; the stream is fed both to the real
//! decoder and to `Model`, a byte-at-a-time state machine written straight
//! from the wire format's rules. Both must report the same frames, the same
//! errors in the same order (each in the same chunk and after the same number
//! of discarded bytes), the same reset results and the same total of
//! discarded bytes. On top of that the target checks the decoder's documented
//! invariants (see `check_frame` and `check_decoder`).
//!
//! Input layout (missing bytes read as 0, so every input is valid):
//!
//! | offset    | meaning                                                     |
//! |-----------|-------------------------------------------------------------|
//! | 0         | bit 0: vnet_hdr; bits 1-2: how to read the maximum (below); |
//! |           | bit 3: offer each chunk to `absorb` before `feed`, as the   |
//! |           | C ABI does                                                  |
//! | 1..3      | `param`, u16 big-endian                                     |
//! | 3         | `P`, the length of the chunk plan                           |
//! | 4..4+P    | the chunk plan, one byte per chunk, used cyclically          |
//! | 4+P..     | the stream                                                  |
//!
//! Maximum frame length: mode 0 `DEFAULT_MAX_FRAME_LEN`, mode 1
//! `param % 301` (0..=300), mode 2 `param` (0..=65535), mode 3
//! `u32::MAX - param` (frames announced as huge are accepted, and never
//! arrive whole).
//!
//! Chunk plan byte: bit 7 resets the decoder before the chunk; bits 0-6,
//! `code`: 0 an empty chunk, 1..=64 that many bytes, 65..=95
//! `(code - 63) * 64` bytes, 96..=126 `(code - 95) * 1024` bytes, 127 the
//! rest of the stream. An empty plan feeds the stream as one chunk. After the
//! stream the decoder is always reset once more.
//!
//! `fuzz/make_corpus.py` writes seeds in this layout.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qemu_netfilter_stats::decoder::{DecodeError, Decoded, FrameDecoder, DEFAULT_MAX_FRAME_LEN};

use qemu_netfilter_stats::wire::{header_len, LEN_FIELD};

// ---------------------------------------------------------------------------
// Input decoding
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Step {
    reset_before: bool,
    /// `None`: the rest of the stream.
    size: Option<usize>,
}

impl Step {
    fn from_byte(b: u8) -> Self {
        let code = usize::from(b & 0x7f);
        let size = match code {
            0..=64 => Some(code),
            65..=95 => Some((code - 63) * 64),
            96..=126 => Some((code - 95) * 1024),
            _ => None,
        };
        Step {
            reset_before: b & 0x80 != 0,
            size,
        }
    }
}

struct Input<'a> {
    vnet_hdr: bool,
    /// Offer each chunk to `FrameDecoder::absorb` first (the FFI's path).
    absorb_first: bool,
    max_frame_len: u32,
    /// The stream cut into chunks, each with "reset before it".
    chunks: Vec<(bool, &'a [u8])>,
}

fn parse(data: &[u8]) -> Input<'_> {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let flags = byte(0);
    let vnet_hdr = flags & 1 != 0;
    let absorb_first = flags & 8 != 0;
    let param = u16::from_be_bytes([byte(1), byte(2)]);
    let max_frame_len = match (flags >> 1) & 3 {
        0 => DEFAULT_MAX_FRAME_LEN,
        1 => u32::from(param % 301),
        2 => u32::from(param),
        _ => u32::MAX - u32::from(param),
    };
    let plan_len = usize::from(byte(3));
    let plan_end = (4 + plan_len).min(data.len());
    let plan: Vec<Step> = data
        .get(4..plan_end)
        .unwrap_or(&[])
        .iter()
        .map(|&b| Step::from_byte(b))
        .collect();
    let mut stream = data.get(plan_end..).unwrap_or(&[]);

    let mut chunks = Vec::new();
    if plan.is_empty() {
        chunks.push((false, stream));
    } else {
        'outer: loop {
            let before = stream.len();
            for step in &plan {
                let n = step.size.unwrap_or(stream.len()).min(stream.len());
                chunks.push((step.reset_before, &stream[..n]));
                stream = &stream[n..];
                if stream.is_empty() {
                    break 'outer;
                }
            }
            if stream.len() == before {
                // A plan of empty chunks only: feed the rest at once.
                chunks.push((false, stream));
                break;
            }
        }
    }
    Input {
        vnet_hdr,
        absorb_first,
        max_frame_len,
        chunks,
    }
}

// ---------------------------------------------------------------------------
// What both sides report
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Frame {
        /// Index of the chunk whose feed reported it.
        chunk: usize,
        /// Bytes discarded before this event.
        discarded_before: usize,
        payload: Vec<u8>,
        vnet_hdr_len: u32,
        /// Where the payload lies in the chunk, if it is a slice of it (the
        /// zero-copy path); `None` when it came from the assembly buffer.
        in_chunk_at: Option<usize>,
    },
    Error {
        chunk: usize,
        discarded_before: usize,
        error: DecodeError,
    },
    /// `reset()`, before chunk `before_chunk` (== number of chunks: the
    /// final reset).
    Reset {
        before_chunk: usize,
        discarded_before: usize,
        result: Option<DecodeError>,
    },
    /// Final total of discarded bytes.
    End { discarded: usize },
}

fn describe(e: &Event) -> String {
    match e {
        Event::Frame {
            chunk,
            discarded_before,
            payload,
            vnet_hdr_len,
            in_chunk_at,
        } => {
            let head: Vec<u8> = payload.iter().take(16).copied().collect();
            format!(
                "Frame {{ chunk: {chunk}, discarded_before: {discarded_before}, \
                 len: {}, head: {head:02x?}, vnet_hdr_len: {vnet_hdr_len}, \
                 in_chunk_at: {in_chunk_at:?} }}",
                payload.len()
            )
        }
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The reference model: one byte at a time, straight from the rules
// ---------------------------------------------------------------------------

enum MState {
    /// Collecting the length field(s); `start` is the stream offset of the
    /// header's first byte.
    Header { bytes: Vec<u8>, start: usize },
    /// Collecting the payload of an accepted header.
    Payload {
        len: usize,
        vnet_hdr_len: u32,
        bytes: Vec<u8>,
        start: usize,
    },
    /// Dropping the payload of a frame whose vnet header length was too big.
    Skip { remaining: usize },
    /// After FrameTooLarge: everything is dropped until reset.
    Desync,
}

struct Model {
    vnet_hdr: bool,
    max_frame_len: u32,
    state: MState,
    /// Stream offset of the next byte.
    pos: usize,
    discarded: usize,
    /// Upper bound for the decoder's assembly buffer since the last reset:
    /// the largest `min(len, 2 * received)` over the frames whose payload
    /// arrived (the buffer grows with the data, doubling, never past the
    /// frame).
    capacity_bound: usize,
}

impl Model {
    fn new(vnet_hdr: bool, max_frame_len: u32) -> Self {
        Model {
            vnet_hdr,
            max_frame_len,
            state: MState::Header {
                bytes: Vec::new(),
                start: 0,
            },
            pos: 0,
            discarded: 0,
            capacity_bound: 0,
        }
    }

    fn header_len(&self) -> usize {
        header_len(self.vnet_hdr)
    }

    fn is_desynchronized(&self) -> bool {
        matches!(self.state, MState::Desync)
    }

    /// Whether `chunk` lies wholly inside the payload being assembled, so
    /// that it completes no frame (what `FrameDecoder::absorb` takes).
    fn absorbs(&self, chunk: &[u8]) -> bool {
        match &self.state {
            MState::Payload { len, bytes, .. } => chunk.len() < len - bytes.len(),
            _ => false,
        }
    }

    fn reset(&mut self, before_chunk: usize, out: &mut Vec<Event>) {
        let header_len = self.header_len();
        let result = match &self.state {
            MState::Header { bytes, .. } if bytes.is_empty() => None,
            MState::Header { bytes, .. } => Some(DecodeError::Truncated {
                received: bytes.len(),
                expected: None,
            }),
            MState::Payload { len, bytes, .. } => Some(DecodeError::Truncated {
                received: header_len + bytes.len(),
                expected: Some(header_len + len),
            }),
            MState::Skip { .. } | MState::Desync => None,
        };
        out.push(Event::Reset {
            before_chunk,
            discarded_before: self.discarded,
            result,
        });
        self.state = MState::Header {
            bytes: Vec::new(),
            start: self.pos,
        };
        self.capacity_bound = 0;
    }

    fn feed(&mut self, chunk: &[u8], chunk_index: usize, out: &mut Vec<Event>) {
        let chunk_start = self.pos;
        for &b in chunk {
            self.byte(b, chunk_index, chunk_start, out);
            self.pos += 1;
        }
    }

    fn byte(&mut self, b: u8, chunk: usize, chunk_start: usize, out: &mut Vec<Event>) {
        let header_len = self.header_len();
        let pos = self.pos;
        match &mut self.state {
            MState::Header { bytes, start } => {
                if bytes.is_empty() {
                    *start = pos;
                }
                bytes.push(b);
                if bytes.len() < header_len {
                    return;
                }
                let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let vnet_hdr_len = if self.vnet_hdr {
                    u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]])
                } else {
                    0
                };
                let start = *start;
                if len > self.max_frame_len {
                    out.push(Event::Error {
                        chunk,
                        discarded_before: self.discarded,
                        error: DecodeError::FrameTooLarge {
                            len,
                            max: self.max_frame_len,
                        },
                    });
                    self.discarded += header_len;
                    self.state = MState::Desync;
                } else if len == 0 {
                    out.push(Event::Error {
                        chunk,
                        discarded_before: self.discarded,
                        error: DecodeError::EmptyFrame,
                    });
                    self.discarded += header_len;
                    self.state = MState::Header {
                        bytes: Vec::new(),
                        start: pos + 1,
                    };
                } else if vnet_hdr_len > len {
                    out.push(Event::Error {
                        chunk,
                        discarded_before: self.discarded,
                        error: DecodeError::VnetHeaderTooLarge { vnet_hdr_len, len },
                    });
                    self.discarded += header_len;
                    self.state = MState::Skip {
                        remaining: len as usize,
                    };
                } else {
                    self.state = MState::Payload {
                        len: len as usize,
                        vnet_hdr_len,
                        bytes: Vec::new(),
                        start,
                    };
                }
            }
            MState::Payload {
                len,
                vnet_hdr_len,
                bytes,
                start,
            } => {
                bytes.push(b);
                let bound = (*len).min(2 * bytes.len());
                self.capacity_bound = self.capacity_bound.max(bound);
                if bytes.len() < *len {
                    return;
                }
                let in_chunk_at = if *start >= chunk_start {
                    Some(*start + header_len - chunk_start)
                } else {
                    None
                };
                out.push(Event::Frame {
                    chunk,
                    discarded_before: self.discarded,
                    payload: std::mem::take(bytes),
                    vnet_hdr_len: *vnet_hdr_len,
                    in_chunk_at,
                });
                self.state = MState::Header {
                    bytes: Vec::new(),
                    start: pos + 1,
                };
            }
            MState::Skip { remaining } => {
                self.discarded += 1;
                *remaining -= 1;
                if *remaining == 0 {
                    self.state = MState::Header {
                        bytes: Vec::new(),
                        start: pos + 1,
                    };
                }
            }
            MState::Desync => self.discarded += 1,
        }
    }
}

// ---------------------------------------------------------------------------
// Driving the real decoder
// ---------------------------------------------------------------------------

/// Invariants of every frame the decoder hands out.
fn check_frame(payload: &[u8], vnet_hdr_len: u32, vnet_hdr: bool, max: u32) {
    assert!(!payload.is_empty(), "empty frame handed out");
    assert!(
        payload.len() as u64 <= u64::from(max),
        "frame of {} bytes over the maximum {max}",
        payload.len()
    );
    assert!(
        vnet_hdr_len as usize <= payload.len(),
        "vnet_hdr_len {vnet_hdr_len} over the {}-byte frame",
        payload.len()
    );
    if !vnet_hdr {
        assert_eq!(vnet_hdr_len, 0, "vnet_hdr_len without vnet_hdr");
    }
}

/// Invariants of the decoder between calls.
fn check_decoder(decoder: &FrameDecoder, model: &Model, when: &str) {
    let capacity = decoder.buffered_capacity();
    assert!(
        capacity as u64 <= u64::from(decoder.max_frame_len()),
        "{when}: buffered_capacity {capacity} over max_frame_len {}",
        decoder.max_frame_len()
    );
    assert!(
        capacity <= model.capacity_bound,
        "{when}: buffered_capacity {capacity} over {} (the buffer should grow \
         with the data that arrived, never past the frame)",
        model.capacity_bound
    );
    assert_eq!(
        decoder.is_desynchronized(),
        model.is_desynchronized(),
        "{when}: is_desynchronized"
    );
}

fn run_decoder(input: &Input<'_>, model: &mut Model) -> (Vec<Event>, Vec<Event>) {
    let (vnet_hdr, max) = (input.vnet_hdr, input.max_frame_len);
    let mut decoder = FrameDecoder::new(vnet_hdr, max);
    assert_eq!(decoder.vnet_hdr(), vnet_hdr);
    assert_eq!(decoder.max_frame_len(), max);
    assert_eq!(decoder.buffered_capacity(), 0, "a new decoder allocated");

    let mut got = Vec::new();
    let mut want = Vec::new();
    let mut discarded = 0usize;

    let reset = |decoder: &mut FrameDecoder,
                 model: &mut Model,
                 got: &mut Vec<Event>,
                 want: &mut Vec<Event>,
                 discarded: usize,
                 before_chunk: usize| {
        got.push(Event::Reset {
            before_chunk,
            discarded_before: discarded,
            result: decoder.reset(),
        });
        model.reset(before_chunk, want);
        assert_eq!(
            decoder.buffered_capacity(),
            0,
            "reset did not free the buffer"
        );
        check_decoder(decoder, model, "after reset");
    };

    for (index, &(reset_before, chunk)) in input.chunks.iter().enumerate() {
        if reset_before {
            reset(&mut decoder, model, &mut got, &mut want, discarded, index);
        }
        if input.absorb_first {
            let expected = model.absorbs(chunk);
            assert_eq!(
                decoder.absorb(chunk),
                expected,
                "chunk {index} ({} bytes): absorb",
                chunk.len()
            );
            if expected {
                model.feed(chunk, index, &mut want);
                check_decoder(&decoder, model, &format!("after absorbing chunk {index}"));
                continue;
            }
        }
        let chunk_addr = chunk.as_ptr() as usize;
        decoder.feed(chunk, |event| match event {
            Decoded::Frame(frame) => {
                check_frame(frame.payload, frame.vnet_hdr_len, vnet_hdr, max);
                let addr = frame.payload.as_ptr() as usize;
                let in_chunk_at = (addr >= chunk_addr
                    && addr + frame.payload.len() <= chunk_addr + chunk.len())
                .then(|| addr - chunk_addr);
                got.push(Event::Frame {
                    chunk: index,
                    discarded_before: discarded,
                    payload: frame.payload.to_vec(),
                    vnet_hdr_len: frame.vnet_hdr_len,
                    in_chunk_at,
                });
            }
            Decoded::Rejected {
                error,
                discarded: n,
            } => {
                got.push(Event::Error {
                    chunk: index,
                    discarded_before: discarded,
                    error,
                });
                discarded += n;
            }
            Decoded::Discarded(n) => discarded += n,
        });
        model.feed(chunk, index, &mut want);
        check_decoder(&decoder, model, &format!("after chunk {index}"));
    }
    let n = input.chunks.len();
    reset(&mut decoder, model, &mut got, &mut want, discarded, n);
    got.push(Event::End { discarded });
    want.push(Event::End {
        discarded: model.discarded,
    });
    (got, want)
}

fuzz_target!(|data: &[u8]| {
    let input = parse(data);
    let mut model = Model::new(input.vnet_hdr, input.max_frame_len);
    let (got, want) = run_decoder(&input, &mut model);

    if got != want {
        let at = got
            .iter()
            .zip(&want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(want.len()));
        let show = |events: &[Event]| -> String {
            events
                .iter()
                .enumerate()
                .skip(at.saturating_sub(2))
                .take(5)
                .map(|(i, e)| format!("  [{i}] {}\n", describe(e)))
                .collect()
        };
        let sizes: Vec<usize> = input.chunks.iter().map(|c| c.1.len()).collect();
        panic!(
            "decoder and model disagree at event {at} \
             (vnet_hdr {}, absorb_first {}, max_frame_len {}, chunk sizes {sizes:?})\n\
             decoder ({} events):\n{}model ({} events):\n{}",
            input.vnet_hdr,
            input.absorb_first,
            input.max_frame_len,
            got.len(),
            show(&got),
            want.len(),
            show(&want),
        );
    }
});
