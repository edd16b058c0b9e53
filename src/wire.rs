//! The redirector wire format, shared by the indev decoder and the outdev
//! queue: each frame is a 4-byte big-endian payload length, then (only when
//! the filter's `vnet_hdr_support` is on) a 4-byte big-endian vnet header
//! length, then the payload (vnet header included).

use std::fmt;

/// QEMU's `NET_BUFSIZE` (4096 + 65536): the largest frame QEMU 10.2.2 accepts.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 4096 + 65536;

/// Bytes of one length field.
pub const LEN_FIELD: usize = 4;

/// The most header bytes a frame has (both length fields).
pub const MAX_HEADER_LEN: usize = 2 * LEN_FIELD;

/// Bytes of a frame's header: one length field, or two with `vnet_hdr`.
#[inline]
pub fn header_len(vnet_hdr: bool) -> usize {
    if vnet_hdr {
        MAX_HEADER_LEN
    } else {
        LEN_FIELD
    }
}

/// The length field at `bytes[at..]`.
#[inline]
pub fn read_len(bytes: &[u8], at: usize) -> u32 {
    let mut field = [0; LEN_FIELD];
    field.copy_from_slice(&bytes[at..at + LEN_FIELD]);
    u32::from_be_bytes(field)
}

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

/// The bytes the counters count of a payload that starts with a vnet header
/// of `vnet_hdr_len` bytes: the Ethernet frame after it, as filter-dump
/// writes it and as the guest's driver counts it.
pub fn ethernet_len(payload_len: usize, vnet_hdr_len: u32) -> usize {
    payload_len.saturating_sub(vnet_hdr_len as usize)
}

/// Append the frame whose payload is `parts` (in order) to `out`, announcing
/// a vnet header of `vnet_hdr_len` bytes when `vnet_hdr` is on; payloads over
/// `max_frame_len` are refused. Returns the payload length; `out` is left
/// unchanged on error.
pub fn encode_into(
    vnet_hdr: bool,
    max_frame_len: u32,
    parts: &[&[u8]],
    vnet_hdr_len: u32,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    if len == 0 {
        return Err(EncodeError::EmptyFrame);
    }
    let wire_len = match u32::try_from(len) {
        Ok(l) if l <= max_frame_len => l,
        _ => {
            return Err(EncodeError::FrameTooLarge {
                len,
                max: max_frame_len,
            })
        }
    };
    out.reserve(header_len(vnet_hdr) + len);
    out.extend_from_slice(&wire_len.to_be_bytes());
    if vnet_hdr {
        out.extend_from_slice(&vnet_hdr_len.to_be_bytes());
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::{Decoded, FrameDecoder};

    fn encode(
        vnet: bool,
        max: u32,
        parts: &[&[u8]],
        vnet_len: u32,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        encode_into(vnet, max, parts, vnet_len, &mut out).map(|_| out)
    }

    #[test]
    fn header_then_payload() {
        assert_eq!(
            encode(false, 99, &[b"ab", b"", b"cde"], 7).unwrap(),
            b"\0\0\0\x05abcde"
        );
        assert_eq!(
            encode(true, 99, &[b"abc"], 2).unwrap(),
            b"\0\0\0\x03\0\0\0\x02abc"
        );
        assert_eq!((header_len(false), header_len(true)), (4, 8));
    }

    #[test]
    fn refuses_empty_and_oversized_leaving_out_unchanged() {
        let mut out = b"kept".to_vec();
        assert_eq!(
            encode_into(false, 10, &[], 0, &mut out),
            Err(EncodeError::EmptyFrame)
        );
        assert_eq!(
            encode_into(false, 10, &[&[0; 11]], 0, &mut out),
            Err(EncodeError::FrameTooLarge { len: 11, max: 10 })
        );
        assert_eq!(out, b"kept");
        assert!(encode(false, 10, &[&[0; 10]], 0).is_ok());
    }

    #[test]
    fn decoder_reads_what_is_encoded() {
        for vnet in [false, true] {
            let mut d = FrameDecoder::new(vnet, DEFAULT_MAX_FRAME_LEN);
            let mut wire = Vec::new();
            for len in [10usize, 60, 1514, 9000, 65535] {
                encode_into(
                    vnet,
                    DEFAULT_MAX_FRAME_LEN,
                    &[&vec![len as u8; len]],
                    10,
                    &mut wire,
                )
                .unwrap();
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
