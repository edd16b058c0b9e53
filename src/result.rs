//! The result codes of the C ABI and their messages.

use std::ffi::CStr;

use crate::decoder::DecodeError;

/// The result of every fallible call. The values are part of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum QnsResult {
    /// Success.
    Ok = 0,
    /// A pointer argument that must not be NULL was NULL.
    NullPointer = 1,
    /// An argument was out of range (an unknown direction or counter id, a
    /// count larger than what is pending, ...).
    InvalidArgument = 2,
    /// A frame was longer than the maximum (or its length field was).
    FrameTooLarge = 3,
    /// A frame's vnet header length was larger than the frame.
    VnetHeaderTooLarge = 4,
    /// A zero-length frame.
    EmptyFrame = 5,
    /// The stream ended inside a frame.
    TruncatedFrame = 6,
    /// The decoder is discarding input after a fatal error, until reset.
    Desynchronized = 7,
    /// The handle is in use by a call further up the stack (a frame callback
    /// called back into its own decoder).
    Busy = 8,
    /// The library hit an internal error (a Rust panic was caught); the
    /// handle is poisoned.
    Panic = 9,
    /// An earlier call on this handle hit an internal error: the handle does
    /// nothing more but can be freed.
    Poisoned = 10,
    /// An outdev's backlog is full: the frame was refused (and counted).
    BacklogFull = 11,
}

/// Each result's message, at the index of its value (a test checks that the
/// table is complete and in order).
const MESSAGES: [(QnsResult, &CStr); 12] = [
    (QnsResult::Ok, c"success"),
    (
        QnsResult::NullPointer,
        c"a required pointer argument was NULL",
    ),
    (QnsResult::InvalidArgument, c"an argument was out of range"),
    (
        QnsResult::FrameTooLarge,
        c"frame longer than the maximum frame length",
    ),
    (
        QnsResult::VnetHeaderTooLarge,
        c"vnet header length larger than the frame",
    ),
    (QnsResult::EmptyFrame, c"zero-length frame"),
    (QnsResult::TruncatedFrame, c"stream ended inside a frame"),
    (
        QnsResult::Desynchronized,
        c"input discarded: the stream is out of step until the decoder is reset",
    ),
    (
        QnsResult::Busy,
        c"handle is busy (re-entered from its own callback)",
    ),
    (
        QnsResult::Panic,
        c"internal error in the netfilter stats library",
    ),
    (
        QnsResult::Poisoned,
        c"handle unusable after an internal error in the netfilter stats library",
    ),
    (
        QnsResult::BacklogFull,
        c"outdev backlog full: the peer is not reading",
    ),
];

impl<T> From<Result<T, QnsResult>> for QnsResult
where
    T: Into<QnsResult>,
{
    fn from(r: Result<T, QnsResult>) -> Self {
        r.map_or_else(|e| e, Into::into)
    }
}

impl From<()> for QnsResult {
    fn from((): ()) -> Self {
        QnsResult::Ok
    }
}

impl From<DecodeError> for QnsResult {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::FrameTooLarge { .. } => QnsResult::FrameTooLarge,
            DecodeError::VnetHeaderTooLarge { .. } => QnsResult::VnetHeaderTooLarge,
            DecodeError::EmptyFrame => QnsResult::EmptyFrame,
            DecodeError::Truncated { .. } => QnsResult::TruncatedFrame,
        }
    }
}

/// The message of result code `code`, or a generic text for an unknown one.
pub fn message(code: u32) -> &'static CStr {
    let entry = usize::try_from(code).ok().and_then(|i| MESSAGES.get(i));
    entry.map_or(c"unknown result code", |m| m.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_table_covers_every_result_in_order() {
        // The values are contiguous from 0 to the last, so a table as long as
        // the last value + 1, each entry at its value, covers every variant.
        assert_eq!(MESSAGES.len(), QnsResult::BacklogFull as usize + 1);
        let mut seen = std::collections::HashSet::new();
        for (i, (result, message)) in MESSAGES.iter().enumerate() {
            assert_eq!(*result as usize, i);
            assert!(seen.insert(*message), "{result:?} repeats a message");
            assert_eq!(super::message(i as u32), *message);
        }
        for unknown in [MESSAGES.len() as u32, u32::MAX] {
            assert_eq!(super::message(unknown), c"unknown result code");
        }
    }
}
