//! The send side of the redirector wire format: one contiguous buffer per
//! frame (length field, optional vnet header length field, payload), so that
//! the C side writes a frame to its chardev in one call instead of QEMU's two
//! or three.
//!
//! The encoder keeps the buffer of the last frame sent and reuses it, so the
//! steady state allocates nothing. A frame that is encoded while an earlier
//! one is still being written (QEMU can re-enter a filter while a chardev
//! write waits) simply gets a fresh buffer.

use std::fmt;

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload is larger than the length field can say, or than the
    /// configured maximum.
    FrameTooLarge {
        /// The payload length.
        len: usize,
        /// The largest payload allowed.
        max: u32,
    },
    /// A frame with no payload: QEMU sends none, and the peer would reject it.
    EmptyFrame,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes is over the maximum {max}")
            }
            Self::EmptyFrame => write!(f, "refusing to send a zero-length frame"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// An encoded frame, ready to be written in one call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EncodedFrame {
    bytes: Vec<u8>,
    header_len: usize,
}

impl EncodedFrame {
    /// The bytes to write: header and payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The payload length (what the counters count).
    pub fn payload_len(&self) -> usize {
        self.bytes.len().saturating_sub(self.header_len)
    }

    /// Take the frame apart (for handing its allocation across the C ABI).
    pub fn into_parts(self) -> (Vec<u8>, usize) {
        (self.bytes, self.header_len)
    }

    /// Put a frame back together from [`EncodedFrame::into_parts`].
    pub fn from_parts(bytes: Vec<u8>, header_len: usize) -> Self {
        Self { bytes, header_len }
    }
}

/// Encodes frames for one outdev.
#[derive(Debug)]
pub struct FrameEncoder {
    vnet_hdr: bool,
    max_frame_len: u32,
    spare: Vec<u8>,
}

/// Keep a spare buffer of at most this capacity between frames: enough for
/// any Ethernet frame, so that a single jumbo frame does not pin 64 KiB.
const SPARE_CAPACITY_LIMIT: usize = 16 * 1024;

impl FrameEncoder {
    /// An encoder that writes the vnet header length field when `vnet_hdr` is
    /// set and refuses payloads over `max_frame_len` bytes.
    pub fn new(vnet_hdr: bool, max_frame_len: u32) -> Self {
        Self {
            vnet_hdr,
            max_frame_len,
            spare: Vec::new(),
        }
    }

    /// Whether the vnet header length field is written.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Encode the payload made of `parts` (in order), announcing a vnet header
    /// of `vnet_hdr_len` bytes when `vnet_hdr` is on.
    pub fn encode(
        &mut self,
        parts: &[&[u8]],
        vnet_hdr_len: u32,
    ) -> Result<EncodedFrame, EncodeError> {
        let mut bytes = std::mem::take(&mut self.spare);
        bytes.clear();
        match self.encode_into(parts, vnet_hdr_len, &mut bytes) {
            Ok(_) => Ok(EncodedFrame {
                bytes,
                header_len: self.header_len(),
            }),
            Err(e) => {
                self.spare = bytes;
                Err(e)
            }
        }
    }

    /// The length fields' size on the wire.
    pub fn header_len(&self) -> usize {
        if self.vnet_hdr {
            8
        } else {
            4
        }
    }

    /// Append the encoded frame to `out`; returns the payload length. `out`
    /// is left unchanged on error.
    pub fn encode_into(
        &self,
        parts: &[&[u8]],
        vnet_hdr_len: u32,
        out: &mut Vec<u8>,
    ) -> Result<usize, EncodeError> {
        let len = parts.iter().map(|p| p.len()).sum::<usize>();
        if len == 0 {
            return Err(EncodeError::EmptyFrame);
        }
        let wire_len = match u32::try_from(len) {
            Ok(l) if l <= self.max_frame_len => l,
            _ => {
                return Err(EncodeError::FrameTooLarge {
                    len,
                    max: self.max_frame_len,
                })
            }
        };
        out.reserve(self.header_len() + len);
        out.extend_from_slice(&wire_len.to_be_bytes());
        if self.vnet_hdr {
            out.extend_from_slice(&vnet_hdr_len.to_be_bytes());
        }
        for part in parts {
            out.extend_from_slice(part);
        }
        Ok(len)
    }

    /// Give a frame's buffer back once it has been written, for reuse.
    pub fn recycle(&mut self, frame: EncodedFrame) {
        let bytes = frame.bytes;
        if bytes.capacity() <= SPARE_CAPACITY_LIMIT && bytes.capacity() > self.spare.capacity() {
            self.spare = bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::{Decoded, FrameDecoder, DEFAULT_MAX_FRAME_LEN};

    #[test]
    fn header_then_payload_in_one_buffer() {
        let mut e = FrameEncoder::new(false, DEFAULT_MAX_FRAME_LEN);
        let f = e.encode(&[b"ab", b"", b"cde"], 99).unwrap();
        assert_eq!(f.as_bytes(), b"\0\0\0\x05abcde");
        assert_eq!(f.payload_len(), 5);

        let mut e = FrameEncoder::new(true, DEFAULT_MAX_FRAME_LEN);
        let f = e.encode(&[b"abc"], 2).unwrap();
        assert_eq!(f.as_bytes(), b"\0\0\0\x03\0\0\0\x02abc");
        assert_eq!(f.payload_len(), 3);
    }

    #[test]
    fn buffer_is_reused() {
        let mut e = FrameEncoder::new(false, DEFAULT_MAX_FRAME_LEN);
        let f = e.encode(&[&[1; 1000]], 0).unwrap();
        let ptr = f.as_bytes().as_ptr();
        e.recycle(f);
        let g = e.encode(&[&[2; 500]], 0).unwrap();
        assert_eq!(g.as_bytes().as_ptr(), ptr);
        // A second frame while the first is still out gets its own buffer.
        let h = e.encode(&[&[3; 10]], 0).unwrap();
        assert_ne!(h.as_bytes().as_ptr(), ptr);
    }

    #[test]
    fn refuses_empty_and_oversized() {
        let mut e = FrameEncoder::new(false, 10);
        assert_eq!(e.encode(&[], 0), Err(EncodeError::EmptyFrame));
        assert_eq!(
            e.encode(&[&[0; 11]], 0),
            Err(EncodeError::FrameTooLarge { len: 11, max: 10 })
        );
        assert!(e.encode(&[&[0; 10]], 0).is_ok());
    }

    #[test]
    fn decoder_reads_what_encoder_writes() {
        for vnet in [false, true] {
            let mut e = FrameEncoder::new(vnet, DEFAULT_MAX_FRAME_LEN);
            let mut d = FrameDecoder::new(vnet, DEFAULT_MAX_FRAME_LEN);
            let mut wire = Vec::new();
            for len in [10usize, 60, 1514, 9000, 65535] {
                let payload = vec![len as u8; len];
                let f = e.encode(&[&payload], 10).unwrap();
                wire.extend_from_slice(f.as_bytes());
                e.recycle(f);
            }
            let mut lens = Vec::new();
            d.feed(&wire, |ev| {
                if let Decoded::Frame(f) = ev {
                    lens.push((f.payload.len(), f.vnet_hdr_len));
                }
            });
            let v = if vnet { 10 } else { 0 };
            assert_eq!(
                lens,
                vec![(10, v), (60, v), (1514, v), (9000, v), (65535, v)]
            );
        }
    }
}
