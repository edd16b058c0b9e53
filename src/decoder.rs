//! The receive side of the redirector wire format: a streaming decoder.
//!
//! The format is in [`crate::wire`]. A chardev hands the bytes over in chunks
//! of any size, so a header, or a payload, may be split across any number of
//! chunks.
//!
//! [`FrameDecoder::feed`] hands out every complete frame. A frame that lies
//! whole inside the chunk is a slice of the chunk (no copy); only a frame that
//! straddles chunks is assembled in a buffer, which grows to that frame's
//! length (never past the configured maximum) and is released by
//! [`FrameDecoder::reset`]. A new decoder allocates nothing.
//!
//! Bad input never panics. Each problem is reported once, as a
//! [`DecodeError`]:
//! - a frame whose framing is intact but whose content is wrong (zero length,
//!   vnet header longer than the frame) is skipped and decoding goes on;
//! - a length over the maximum means the stream can no longer be trusted: the
//!   decoder discards everything until [`FrameDecoder::reset`] (the C side
//!   hangs up, and resets when the peer reconnects).

use std::fmt;

pub use crate::wire::DEFAULT_MAX_FRAME_LEN;
use crate::wire::{self, LEN_FIELD, MAX_HEADER_LEN};

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The payload, vnet header included (as QEMU passes it on).
    pub payload: &'a [u8],
    /// The vnet header length the peer sent; 0 when `vnet_hdr` is off.
    pub vnet_hdr_len: u32,
}

/// What was wrong with the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The length field is larger than the maximum frame length. The stream is
    /// out of step from here on: input is discarded until reset.
    FrameTooLarge {
        /// The length the peer sent.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The vnet header length is larger than the frame; the frame is skipped.
    VnetHeaderTooLarge {
        /// The vnet header length the peer sent.
        vnet_hdr_len: u32,
        /// The frame's length.
        len: u32,
    },
    /// A frame with no payload; it is skipped.
    EmptyFrame,
    /// The stream ended (reset) in the middle of a frame.
    Truncated {
        /// Bytes of the frame (header included) that had arrived.
        received: usize,
        /// Bytes the frame should have had (header included), when known.
        expected: Option<usize>,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::FrameTooLarge { len, max } => write!(
                f,
                "frame length {len} is over the maximum {max}: \
                 the rest of the stream is out of step"
            ),
            Self::VnetHeaderTooLarge { vnet_hdr_len, len } => write!(
                f,
                "vnet header length {vnet_hdr_len} is larger than the \
                 {len}-byte frame; frame dropped"
            ),
            Self::EmptyFrame => write!(f, "zero-length frame dropped"),
            Self::Truncated { received, expected } => match expected {
                Some(expected) => write!(
                    f,
                    "stream ended inside a frame ({received} of {expected} bytes)"
                ),
                None => write!(f, "stream ended inside a frame header ({received} bytes)"),
            },
        }
    }
}

impl std::error::Error for DecodeError {}

/// What [`FrameDecoder::feed`] reports, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete frame.
    Frame(Frame<'a>),
    /// Input that was rejected. `discarded` is how many bytes of the stream
    /// (header and payload) this rejection accounts for so far; a frame that
    /// is being skipped may account for more bytes in later events.
    Rejected {
        /// What was wrong.
        error: DecodeError,
        /// Bytes of input thrown away with it.
        discarded: usize,
    },
    /// Bytes thrown away after an earlier rejection: the rest of a skipped
    /// frame, or anything received while the stream is out of step.
    Discarded(usize),
}

/// What the fast path did with the start of a chunk.
enum Fast<'c> {
    /// Handed out a whole frame; the rest of the chunk.
    Done(&'c [u8]),
    /// Started assembling a frame with the whole rest of the chunk.
    Started,
    /// Nothing: use the general path.
    Slow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading the length field(s); `have` bytes of them are in `header`.
    Header { have: usize },
    /// Assembling a payload that straddles chunks in `buf`.
    Payload { len: usize, vnet_hdr_len: u32 },
    /// Throwing away the payload of a rejected frame.
    Skip { remaining: usize },
    /// Out of step after a fatal error; everything is discarded until reset.
    Desynchronized,
}

/// A streaming decoder for the redirector wire format.
#[derive(Debug)]
pub struct FrameDecoder {
    vnet_hdr: bool,
    max_frame_len: u32,
    state: State,
    header: [u8; MAX_HEADER_LEN],
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder that reads the vnet header length field when `vnet_hdr` is
    /// set and accepts frames of up to `max_frame_len` bytes.
    pub fn new(vnet_hdr: bool, max_frame_len: u32) -> Self {
        Self {
            vnet_hdr,
            max_frame_len,
            state: State::Header { have: 0 },
            header: [0; MAX_HEADER_LEN],
            buf: Vec::new(),
        }
    }

    /// Whether this decoder reads a vnet header length field.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The largest frame this decoder accepts.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Bytes the decoder currently holds on the heap (for memory accounting).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether input is being discarded after a fatal error.
    pub fn is_desynchronized(&self) -> bool {
        self.state == State::Desynchronized
    }

    fn header_len(&self) -> usize {
        wire::header_len(self.vnet_hdr)
    }

    /// Back to a clean state, ready for a new stream; frees the assembly
    /// buffer. Reports the frame that was cut off, if the stream ended inside
    /// one.
    pub fn reset(&mut self) -> Option<DecodeError> {
        let cut_off = match self.state {
            State::Header { have: 0 } | State::Desynchronized => None,
            State::Header { have } => Some(DecodeError::Truncated {
                received: have,
                expected: None,
            }),
            State::Payload { len, .. } => Some(DecodeError::Truncated {
                received: self.header_len() + self.buf.len(),
                expected: Some(self.header_len() + len),
            }),
            // The frame was already reported when it was rejected.
            State::Skip { .. } => None,
        };
        self.state = State::Header { have: 0 };
        self.buf = Vec::new();
        cut_off
    }

    /// If `chunk` lies wholly inside the payload being assembled (it
    /// completes no frame), append it and return true: nothing to report.
    #[inline(always)]
    pub fn absorb(&mut self, chunk: &[u8]) -> bool {
        if let State::Payload { len, .. } = self.state {
            if chunk.len() < len - self.buf.len() {
                self.grow_for(chunk.len(), len);
                self.buf.extend_from_slice(chunk);
                return true;
            }
        }
        false
    }

    /// Decode `chunk`, the next bytes of the stream, reporting every complete
    /// frame and every problem to `sink` in stream order.
    #[inline(always)]
    pub fn feed<F>(&mut self, mut chunk: &[u8], mut sink: F)
    where
        F: FnMut(Decoded<'_>),
    {
        if self.absorb(chunk) {
            return;
        }
        while !chunk.is_empty() {
            match self.state {
                State::Header { have } => {
                    // Fast path: a whole frame inside the chunk is handed out
                    // as a slice of it.
                    if have == 0 {
                        match self.whole_frame(chunk, &mut sink) {
                            Fast::Done(rest) => {
                                chunk = rest;
                                continue;
                            }
                            Fast::Started => return,
                            Fast::Slow => {}
                        }
                    }
                    let want = self.header_len() - have;
                    let take = want.min(chunk.len());
                    self.header[have..have + take].copy_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if take < want {
                        self.state = State::Header { have: have + take };
                    } else {
                        self.state = State::Header { have: 0 };
                        self.start_frame(&mut sink);
                    }
                }
                State::Payload { len, vnet_hdr_len } => {
                    let take = (len - self.buf.len()).min(chunk.len());
                    self.grow_for(take, len);
                    self.buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.buf.len() == len {
                        sink(Decoded::Frame(Frame {
                            payload: &self.buf,
                            vnet_hdr_len,
                        }));
                        self.buf.clear();
                        self.state = State::Header { have: 0 };
                    }
                }
                State::Skip { remaining } => {
                    let take = remaining.min(chunk.len());
                    chunk = &chunk[take..];
                    sink(Decoded::Discarded(take));
                    self.state = if take == remaining {
                        State::Header { have: 0 }
                    } else {
                        State::Skip {
                            remaining: remaining - take,
                        }
                    };
                }
                State::Desynchronized => {
                    sink(Decoded::Discarded(chunk.len()));
                    return;
                }
            }
        }
    }

    /// If `chunk` starts with a complete, valid frame, hand it out without
    /// copying and return the rest of the chunk; if it starts with the valid
    /// header of a frame that does not fit, start assembling that frame from
    /// the rest of the chunk. Anything else is left to the general path.
    #[inline(always)]
    fn whole_frame<'c, F>(&mut self, chunk: &'c [u8], sink: &mut F) -> Fast<'c>
    where
        F: FnMut(Decoded<'_>),
    {
        let header_len = self.header_len();
        let Some(header) = chunk.get(..header_len) else {
            return Fast::Slow;
        };
        let len = wire::read_len(header, 0);
        let vnet_hdr_len = if self.vnet_hdr {
            wire::read_len(header, LEN_FIELD)
        } else {
            0
        };
        if len == 0 || len > self.max_frame_len || vnet_hdr_len > len {
            return Fast::Slow;
        }
        let len = len as usize;
        let body = &chunk[header_len..];
        if let Some(payload) = body.get(..len) {
            sink(Decoded::Frame(Frame {
                payload,
                vnet_hdr_len,
            }));
            return Fast::Done(&body[len..]);
        }
        // The frame straddles chunks: the rest of this chunk is its start.
        self.buf.clear();
        self.grow_for(body.len(), len);
        self.buf.extend_from_slice(body);
        self.state = State::Payload { len, vnet_hdr_len };
        Fast::Started
    }

    /// The length fields are complete in `self.header`: check them and move
    /// to the state that reads (or skips) the payload.
    fn start_frame<F>(&mut self, sink: &mut F)
    where
        F: FnMut(Decoded<'_>),
    {
        let header_len = self.header_len();
        let len = wire::read_len(&self.header, 0);
        let vnet_hdr_len = if self.vnet_hdr {
            wire::read_len(&self.header, LEN_FIELD)
        } else {
            0
        };
        if len > self.max_frame_len {
            self.state = State::Desynchronized;
            self.buf = Vec::new();
            sink(Decoded::Rejected {
                error: DecodeError::FrameTooLarge {
                    len,
                    max: self.max_frame_len,
                },
                discarded: header_len,
            });
            return;
        }
        // len <= max_frame_len, which is a u32: it fits a usize on every
        // platform QEMU supports.
        let len_usize = len as usize;
        if len == 0 {
            sink(Decoded::Rejected {
                error: DecodeError::EmptyFrame,
                discarded: header_len,
            });
            return;
        }
        if vnet_hdr_len > len {
            self.state = State::Skip {
                remaining: len_usize,
            };
            sink(Decoded::Rejected {
                error: DecodeError::VnetHeaderTooLarge { vnet_hdr_len, len },
                discarded: header_len,
            });
            return;
        }
        self.buf.clear();
        self.state = State::Payload {
            len: len_usize,
            vnet_hdr_len,
        };
    }
}

impl FrameDecoder {
    /// Make room for `more` bytes of a `frame_len`-byte frame. The buffer
    /// grows with the data that actually arrives (doubling, so a slow peer
    /// costs few reallocations), never past the frame: a peer that only
    /// announces a large frame makes the decoder allocate nothing.
    #[inline]
    fn grow_for(&mut self, more: usize, frame_len: usize) {
        let needed = self.buf.len() + more;
        if needed > self.buf.capacity() {
            let target = needed.max((self.buf.capacity() * 2).min(frame_len));
            self.buf.reserve_exact(target - self.buf.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the decoder reported, with frames copied out.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Log {
        frames: Vec<(Vec<u8>, u32)>,
        errors: Vec<DecodeError>,
        discarded: usize,
    }

    fn run(decoder: &mut FrameDecoder, chunks: &[&[u8]]) -> Log {
        let mut log = Log::default();
        for chunk in chunks {
            decoder.feed(chunk, |event| match event {
                Decoded::Frame(f) => log.frames.push((f.payload.to_vec(), f.vnet_hdr_len)),
                Decoded::Rejected { error, discarded } => {
                    log.errors.push(error);
                    log.discarded += discarded;
                }
                Decoded::Discarded(n) => log.discarded += n,
            });
        }
        log
    }

    fn frame(payload: &[u8], vnet_hdr_len: Option<u32>) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        if let Some(v) = vnet_hdr_len {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    /// A small deterministic generator (xorshift), so that tests need no
    /// extra crate and every failure is reproducible from its seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn one_frame_in_one_chunk_is_not_copied() {
        let wire = frame(b"hello", None);
        let mut d = FrameDecoder::new(false, DEFAULT_MAX_FRAME_LEN);
        let mut seen = None;
        d.feed(&wire, |e| {
            if let Decoded::Frame(f) = e {
                seen = Some(f.payload.as_ptr());
            }
        });
        assert_eq!(seen, Some(wire[4..].as_ptr()));
        assert_eq!(d.buffered_capacity(), 0);
    }

    #[test]
    fn many_frames_in_one_chunk() {
        let mut wire = Vec::new();
        for i in 1..=100u8 {
            wire.extend(frame(&vec![i; usize::from(i)], Some(u32::from(i) / 2)));
        }
        let mut d = FrameDecoder::new(true, DEFAULT_MAX_FRAME_LEN);
        let log = run(&mut d, &[&wire]);
        assert_eq!(log.frames.len(), 100);
        assert!(log.errors.is_empty());
        for (i, (payload, vnet)) in log.frames.iter().enumerate() {
            let n = i as u8 + 1;
            assert_eq!(payload, &vec![n; usize::from(n)]);
            assert_eq!(*vnet, u32::from(n) / 2);
        }
    }

    #[test]
    fn header_split_byte_by_byte() {
        let wire = frame(b"abcdef", Some(2));
        let mut d = FrameDecoder::new(true, DEFAULT_MAX_FRAME_LEN);
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        let log = run(&mut d, &chunks);
        assert_eq!(log.frames, vec![(b"abcdef".to_vec(), 2)]);
    }

    #[test]
    fn largest_frame_across_a_hundred_chunks() {
        let payload: Vec<u8> = (0..65535u32).map(|i| i as u8).collect();
        let wire = frame(&payload, None);
        let size = wire.len().div_ceil(100);
        let chunks: Vec<&[u8]> = wire.chunks(size).collect();
        assert_eq!(chunks.len(), 100);
        let mut d = FrameDecoder::new(false, DEFAULT_MAX_FRAME_LEN);
        let log = run(&mut d, &chunks);
        assert_eq!(log.frames, vec![(payload, 0)]);
        // The assembly buffer grew to the frame, not to the maximum.
        assert_eq!(d.buffered_capacity(), 65535);
        assert_eq!(d.reset(), None);
        assert_eq!(d.buffered_capacity(), 0);
    }

    #[test]
    fn announcing_a_large_frame_allocates_nothing() {
        let mut d = FrameDecoder::new(false, u32::MAX);
        run(&mut d, &[&u32::MAX.to_be_bytes(), b"x"]);
        assert!(d.buffered_capacity() < 64, "{}", d.buffered_capacity());
    }

    #[test]
    fn slow_peer_costs_few_reallocations() {
        let payload = vec![5u8; 9000];
        let wire = frame(&payload, None);
        let mut d = FrameDecoder::new(false, DEFAULT_MAX_FRAME_LEN);
        let mut capacities = std::collections::BTreeSet::new();
        for byte in wire.chunks(1) {
            run(&mut d, &[byte]);
            capacities.insert(d.buffered_capacity());
        }
        assert!(capacities.len() < 20, "{capacities:?}");
        assert_eq!(d.buffered_capacity(), 9000);
    }

    #[test]
    fn frame_of_exactly_the_maximum_is_accepted() {
        let payload = vec![7u8; 100];
        let mut d = FrameDecoder::new(false, 100);
        let log = run(&mut d, &[&frame(&payload, None)]);
        assert_eq!(log.frames.len(), 1);
        let log = run(&mut d, &[&frame(&[1; 101], None)]);
        assert_eq!(
            log.errors,
            vec![DecodeError::FrameTooLarge { len: 101, max: 100 }]
        );
    }

    #[test]
    fn any_chunking_gives_the_same_frames() {
        for vnet in [false, true] {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..200 {
                let len = 1 + rng.below(3000);
                let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let vnet_len = if vnet { rng.below(len + 1) as u32 } else { 0 };
                wire.extend(frame(&payload, vnet.then_some(vnet_len)));
                expected.push((payload, vnet_len));
            }
            for seed in 1..50u64 {
                let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
                let mut chunks = Vec::new();
                let mut rest = &wire[..];
                while !rest.is_empty() {
                    let max = [1, 7, 64, 1500, 70000][rng.below(5)];
                    let n = (1 + rng.below(max)).min(rest.len());
                    chunks.push(&rest[..n]);
                    rest = &rest[n..];
                }
                let mut d = FrameDecoder::new(vnet, DEFAULT_MAX_FRAME_LEN);
                let log = run(&mut d, &chunks);
                assert!(log.errors.is_empty(), "seed {seed}");
                assert_eq!(log.frames, expected, "seed {seed}, vnet {vnet}");
            }
        }
    }

    #[test]
    fn oversized_length_desynchronizes_until_reset() {
        let mut d = FrameDecoder::new(false, DEFAULT_MAX_FRAME_LEN);
        let mut wire = frame(b"ok", None);
        wire.extend_from_slice(&(DEFAULT_MAX_FRAME_LEN + 1).to_be_bytes());
        wire.extend_from_slice(&[0xAA; 10]);
        let log = run(&mut d, &[&wire, &frame(b"lost", None)]);
        assert_eq!(log.frames, vec![(b"ok".to_vec(), 0)]);
        assert_eq!(
            log.errors,
            vec![DecodeError::FrameTooLarge {
                len: DEFAULT_MAX_FRAME_LEN + 1,
                max: DEFAULT_MAX_FRAME_LEN
            }]
        );
        assert_eq!(log.discarded, 4 + 10 + 8);
        assert!(d.is_desynchronized());
        assert_eq!(d.reset(), None);
        let log = run(&mut d, &[&frame(b"again", None)]);
        assert_eq!(log.frames, vec![(b"again".to_vec(), 0)]);
    }

    #[test]
    fn vnet_header_longer_than_frame_skips_that_frame_only() {
        let mut d = FrameDecoder::new(true, DEFAULT_MAX_FRAME_LEN);
        let mut wire = frame(b"abc", Some(4));
        wire.extend(frame(b"next", Some(0)));
        // Split inside the skipped payload, too.
        let log = run(&mut d, &[&wire[..9], &wire[9..]]);
        assert_eq!(
            log.errors,
            vec![DecodeError::VnetHeaderTooLarge {
                vnet_hdr_len: 4,
                len: 3
            }]
        );
        assert_eq!(log.discarded, 8 + 3);
        assert_eq!(log.frames, vec![(b"next".to_vec(), 0)]);
    }

    #[test]
    fn zero_length_frame_is_rejected_and_decoding_goes_on() {
        let mut d = FrameDecoder::new(false, DEFAULT_MAX_FRAME_LEN);
        let mut wire = frame(b"", None);
        wire.extend(frame(b"x", None));
        let log = run(&mut d, &[&wire]);
        assert_eq!(log.errors, vec![DecodeError::EmptyFrame]);
        assert_eq!(log.discarded, 4);
        assert_eq!(log.frames, vec![(b"x".to_vec(), 0)]);
    }

    #[test]
    fn reset_reports_a_frame_cut_off() {
        let wire = frame(b"abcdef", None);
        let mut d = FrameDecoder::new(false, DEFAULT_MAX_FRAME_LEN);
        run(&mut d, &[&wire[..2]]);
        assert_eq!(
            d.reset(),
            Some(DecodeError::Truncated {
                received: 2,
                expected: None
            })
        );
        run(&mut d, &[&wire[..7]]);
        assert_eq!(
            d.reset(),
            Some(DecodeError::Truncated {
                received: 7,
                expected: Some(10)
            })
        );
        let log = run(&mut d, &[&wire]);
        assert_eq!(log.frames, vec![(b"abcdef".to_vec(), 0)]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(42);
        for vnet in [false, true] {
            let mut d = FrameDecoder::new(vnet, 2000);
            for _ in 0..2000 {
                let len = rng.below(300);
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                d.feed(&bytes, |_| {});
                if rng.below(10) == 0 {
                    d.reset();
                }
            }
        }
    }

    #[test]
    fn errors_have_clear_messages() {
        let e = DecodeError::FrameTooLarge { len: 9, max: 8 };
        assert_eq!(
            e.to_string(),
            "frame length 9 is over the maximum 8: the rest of the stream is out of step"
        );
    }
}
