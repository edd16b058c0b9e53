//! C ABI of [`FrameDecoder`]: the redirector's indev receive path.

use std::{
    cell::{Cell, UnsafeCell},
    ffi::{c_char, c_void, CString},
};

use super::{boundary, counters::QnsCounters, max_frame_len_or_default, QnsResult};
use crate::{
    counters::{FilterCounters, QnsCounterId},
    decoder::{DecodeError, Decoded, FrameDecoder},
};

/// A streaming decoder for the redirector wire format (opaque).
///
/// Owner: whoever called [`qns_decoder_new`]; released with
/// [`qns_decoder_free`]. Thread safety: none; use one decoder from one thread
/// at a time (QEMU: under the BQL).
pub struct QnsDecoder {
    /// Set while a call is running, so that a frame callback that calls back
    /// into the same decoder gets [`QnsResult::Busy`] instead of aliasing it.
    busy: Cell<bool>,
    inner: UnsafeCell<DecoderState>,
}

struct DecoderState {
    decoder: FrameDecoder,
    /// The text of the last error, for [`qns_decoder_error_message`].
    last_error: CString,
}

/// Called once for each complete frame, in stream order. `payload` points to
/// `len` bytes (`len` > 0) that stay valid only until the callback returns;
/// `vnet_hdr_len` is the header length the peer announced (0 when `vnet_hdr` is
/// off). The callback must not free the decoder; calling any other decoder
/// function on it gets `QNS_RESULT_BUSY`.
pub type QnsFrameCallback = Option<
    unsafe extern "C" fn(opaque: *mut c_void, payload: *const u8, len: usize, vnet_hdr_len: u32),
>;

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

impl DecoderState {
    fn record(&mut self, error: DecodeError) {
        // Display output never holds a NUL byte.
        self.last_error = CString::new(error.to_string()).unwrap_or_default();
    }
}

impl QnsDecoder {
    /// The fast path of [`qns_decoder_feed`]: a chunk that only continues
    /// the frame being assembled is appended, with nothing to report or
    /// count. Returns false when the full path is needed (or a call is
    /// running, which the full path reports).
    ///
    /// It runs outside the panic boundary, whose set-up costs as much as the
    /// append of a small chunk: `FrameDecoder::absorb` cannot panic (it
    /// subtracts only below the frame length it checked, grows the buffer to
    /// at most that length, and running out of memory aborts rather than
    /// unwinds).
    #[inline(always)]
    fn absorb(&self, chunk: &[u8]) -> bool {
        if self.busy.get() {
            return false;
        }
        // SAFETY: `busy` is false, so no other reference to the state exists
        // (every other access goes through `with_state`, and the handle is
        // not shared between threads); `absorb` calls no callback, so none
        // is created while this one lives.
        let state = unsafe { &mut *self.inner.get() };
        state.decoder.absorb(chunk)
    }

    /// Run `f` on the decoder state, unless a call is already running.
    #[inline(always)]
    fn with_state(&self, f: impl FnOnce(&mut DecoderState) -> QnsResult) -> QnsResult {
        if self.busy.replace(true) {
            return QnsResult::Busy;
        }
        // SAFETY: `busy` was false, so no other reference to the state exists
        // (every access goes through this function, and the handle is not
        // shared between threads); it stays true until `f` returns, so a
        // re-entrant call cannot create a second one.
        let state = unsafe { &mut *self.inner.get() };
        let result = boundary(QnsResult::Panic, || f(state));
        self.busy.set(false);
        result
    }
}

/// A new decoder. `vnet_hdr`: the stream carries a vnet header length field
/// after each length (the filter's `vnet_hdr_support`). `max_frame_len`: the
/// largest payload accepted; 0 means QEMU's `NET_BUFSIZE` (69632).
///
/// A new decoder allocates no frame buffer; one grows, to the size of the
/// frame, only while a frame straddles two calls.
/// The caller owns the result and frees it with [`qns_decoder_free`].
#[no_mangle]
pub extern "C" fn qns_decoder_new(vnet_hdr: bool, max_frame_len: u32) -> *mut QnsDecoder {
    let max = max_frame_len_or_default(max_frame_len);
    boundary(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(QnsDecoder {
            busy: Cell::new(false),
            inner: UnsafeCell::new(DecoderState {
                decoder: FrameDecoder::new(vnet_hdr, max),
                last_error: CString::default(),
            }),
        }))
    })
}

/// Free a decoder. NULL is ignored, and so is a call from inside one of the
/// decoder's own frame callbacks (the decoder is then still in use).
///
/// # Safety
/// `decoder` must be NULL or from [`qns_decoder_new`] and not freed before.
#[no_mangle]
pub unsafe extern "C" fn qns_decoder_free(decoder: *mut QnsDecoder) {
    // SAFETY: the caller guarantees decoder is NULL or live.
    let Some(d) = (unsafe { decoder.as_ref() }) else {
        return;
    };
    if d.busy.get() {
        return;
    }
    // SAFETY: it came from Box::into_raw in qns_decoder_new, is freed only
    // once (caller's guarantee), and no call is using it (busy is false).
    drop(unsafe { Box::from_raw(decoder) });
}

/// Decode the next `len` bytes of the stream. `callback` gets every complete
/// frame, in order. When `counters` is not NULL, each frame adds to its
/// `indev` counter and each rejection to `indev-errors` (one packet per
/// rejected frame; the bytes thrown away).
///
/// Returns `QNS_RESULT_OK`; or, when input was rejected, the problem met in
/// this chunk (`FRAME_TOO_LARGE`, `VNET_HEADER_TOO_LARGE`, `EMPTY_FRAME`; the
/// first one, except that `FRAME_TOO_LARGE` always wins; its text is in
/// [`qns_decoder_error_message`]). Frames before and after a rejected one are
/// still delivered, except after `FRAME_TOO_LARGE`, which leaves the stream
/// out of step: everything after it is discarded, and every later call
/// (even with `len` 0) returns `QNS_RESULT_DESYNCHRONIZED`, until
/// [`qns_decoder_reset`]. Report the former to the user; the latter needs no
/// new message.
///
/// # Safety
/// `decoder` must be NULL or a live decoder; `counters` NULL or live counters;
/// `buf` must point to `len` readable bytes (it may be NULL when `len` is 0);
/// `callback` must be safe to call with `opaque` as described at
/// [`QnsFrameCallback`].
#[no_mangle]
pub unsafe extern "C" fn qns_decoder_feed(
    decoder: *const QnsDecoder,
    counters: *const QnsCounters,
    buf: *const u8,
    len: usize,
    callback: QnsFrameCallback,
    opaque: *mut c_void,
) -> QnsResult {
    // SAFETY: the caller guarantees decoder is NULL or live.
    let Some(decoder) = (unsafe { decoder.as_ref() }) else {
        return QnsResult::NullPointer;
    };
    // SAFETY: the caller guarantees counters is NULL or live.
    let counters = unsafe { QnsCounters::from_ptr(counters) };
    let Some(callback) = callback else {
        return QnsResult::NullPointer;
    };
    let chunk: &[u8] = if len == 0 {
        &[]
    } else if buf.is_null() {
        return QnsResult::NullPointer;
    } else {
        // SAFETY: buf is not NULL and the caller guarantees len readable bytes
        // that C does not change during the call.
        unsafe { std::slice::from_raw_parts(buf, len) }
    };
    // The common case of a slow or small-chunked peer: the chunk only
    // continues a frame being assembled. Nothing to count or report.
    if decoder.absorb(chunk) {
        return QnsResult::Ok;
    }
    // SAFETY: forwarded from this function's own contract.
    unsafe { feed_full(decoder, counters, chunk, callback, opaque) }
}

/// The rest of [`qns_decoder_feed`] (frames to hand out, or problems to
/// report). Out of line, so that the fast path does not pay for this
/// path's stack frame: its register saves were a fifth of a call.
///
/// # Safety
/// `callback` must be safe to call with `opaque` as described at
/// [`QnsFrameCallback`].
#[inline(never)]
unsafe fn feed_full(
    decoder: &QnsDecoder,
    counters: Option<&FilterCounters>,
    chunk: &[u8],
    callback: unsafe extern "C" fn(*mut c_void, *const u8, usize, u32),
    opaque: *mut c_void,
) -> QnsResult {
    decoder.with_state(|state| {
        let was_desynchronized = state.decoder.is_desynchronized();
        let mut first_error = None;
        // Counted once per chunk, not per frame: two atomic adds per frame
        // would cost more than decoding a small frame.
        let mut frames = Tally::default();
        let mut rejected = Tally::default();
        state.decoder.feed(chunk, |event| match event {
            Decoded::Frame(frame) => {
                frames.add(1, frame.payload.len());
                // SAFETY: the caller guarantees the callback may be called
                // with opaque; the payload pointer and length describe a live
                // slice for the duration of the call.
                unsafe {
                    callback(
                        opaque,
                        frame.payload.as_ptr(),
                        frame.payload.len(),
                        frame.vnet_hdr_len,
                    );
                }
            }
            Decoded::Rejected { error, discarded } => {
                rejected.add(1, discarded);
                // A fatal error is the one to report, whatever came first:
                // after it the stream is out of step and nothing else is.
                if first_error.is_none() || matches!(error, DecodeError::FrameTooLarge { .. }) {
                    first_error = Some(error);
                }
            }
            Decoded::Discarded(n) => rejected.add(0, n),
        });
        frames.flush(counters, QnsCounterId::Indev);
        rejected.flush(counters, QnsCounterId::IndevErrors);
        match first_error {
            Some(error) => {
                state.record(error);
                error.into()
            }
            None if was_desynchronized => QnsResult::Desynchronized,
            None => QnsResult::Ok,
        }
    })
}

/// Packets and bytes gathered during one call, added to the shared counters
/// at its end.
#[derive(Default)]
struct Tally {
    packets: u64,
    bytes: usize,
}

impl Tally {
    fn add(&mut self, packets: u64, bytes: usize) {
        self.packets += packets;
        self.bytes += bytes;
    }

    fn flush(self, counters: Option<&FilterCounters>, id: QnsCounterId) {
        if self.packets > 0 || self.bytes > 0 {
            count(counters, id, self.packets, self.bytes);
        }
    }
}

fn count(counters: Option<&FilterCounters>, id: QnsCounterId, packets: u64, bytes: usize) {
    if let Some(c) = counters {
        c.add(id, packets, bytes as u64);
    }
}

/// Start over with a clean state (for a new connection) and release the frame
/// buffer. The rest of a frame that was already rejected (and is being
/// skipped) is not reported again. If the stream ended inside a frame
/// otherwise, returns
/// `QNS_RESULT_TRUNCATED_FRAME` (its text is in
/// [`qns_decoder_error_message`]) and counts it in `counters`' `indev-errors`
/// (one packet, the bytes received of it).
///
/// # Safety
/// `decoder` must be NULL or a live decoder; `counters` NULL or live counters.
#[no_mangle]
pub unsafe extern "C" fn qns_decoder_reset(
    decoder: *const QnsDecoder,
    counters: *const QnsCounters,
) -> QnsResult {
    // SAFETY: the caller guarantees decoder is NULL or live.
    let Some(decoder) = (unsafe { decoder.as_ref() }) else {
        return QnsResult::NullPointer;
    };
    // SAFETY: the caller guarantees counters is NULL or live.
    let counters = unsafe { QnsCounters::from_ptr(counters) };
    decoder.with_state(|state| match state.decoder.reset() {
        Some(error) => {
            if let DecodeError::Truncated { received, .. } = error {
                count(counters, QnsCounterId::IndevErrors, 1, received);
            }
            state.record(error);
            error.into()
        }
        None => QnsResult::Ok,
    })
}

/// The text of the decoder's last error ("" before any), for a log message;
/// never NULL, so it can go straight into a `%s`. The string belongs to the
/// decoder and stays valid until the next call on it. A NULL or busy
/// decoder gets a static text saying so.
///
/// # Safety
/// `decoder` must be NULL or a live decoder.
#[no_mangle]
pub unsafe extern "C" fn qns_decoder_error_message(decoder: *const QnsDecoder) -> *const c_char {
    // SAFETY: the caller guarantees decoder is NULL or live.
    let Some(decoder) = (unsafe { decoder.as_ref() }) else {
        return c"no decoder".as_ptr();
    };
    let mut message = c"decoder busy".as_ptr();
    decoder.with_state(|state| {
        message = state.last_error.as_ptr();
        QnsResult::Ok
    });
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn ignore(_: *mut c_void, _: *const u8, _: usize, _: u32) {}

    fn feed(d: *const QnsDecoder, bytes: &[u8]) -> QnsResult {
        // SAFETY: d is live; bytes is a live slice; ignore may be called with
        // any opaque pointer.
        unsafe {
            qns_decoder_feed(
                d,
                std::ptr::null(),
                bytes.as_ptr(),
                bytes.len(),
                Some(ignore),
                std::ptr::null_mut(),
            )
        }
    }

    #[test]
    fn fatal_error_wins_over_an_earlier_one_in_the_same_chunk() {
        let d = qns_decoder_new(false, 100);
        let mut wire = 0u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&101u32.to_be_bytes());
        assert_eq!(feed(d, &wire), QnsResult::FrameTooLarge);
        assert_eq!(feed(d, b"more"), QnsResult::Desynchronized);
        assert_eq!(feed(d, b""), QnsResult::Desynchronized);
        // SAFETY: d is live and not used after this.
        unsafe { qns_decoder_free(d) };
    }
}
