//! C ABI of [`FrameDecoder`]: the redirector's indev receive path.

use std::ffi::{c_char, c_void, CString};

use super::{arg, counters::QnsCounters, opt_arg, or_default, QnsResult};
use crate::{
    counters::{FilterCounters, QnsCounterId},
    decoder::{DecodeError, Decoded, FrameDecoder},
    handle::Handle,
    wire::DEFAULT_MAX_FRAME_LEN,
};

/// A streaming decoder for the redirector wire format (opaque).
///
/// Owner: whoever called `qns_decoder_new()`; released with
/// `qns_decoder_free()`. Thread safety: none; one thread at a time, and
/// `qns_decoder_free()` only once no other thread can be inside a call on it.
/// In QEMU a filter's and a netdev's decoder are used under the BQL;
/// colo-compare's are fed in its iothread, which stops reading its inputs
/// before the main loop frees them.
pub struct QnsDecoder(Handle<DecoderState>);

struct DecoderState {
    decoder: FrameDecoder,
    /// The counters that frames and rejected input add to.
    frames_id: QnsCounterId,
    errors_id: QnsCounterId,
    /// The text of the last error, for `qns_decoder_error_message()`.
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

impl DecoderState {
    /// Keep `error`'s text for `qns_decoder_error_message()` and return its code.
    fn record(&mut self, error: DecodeError) -> QnsResult {
        // Display output never holds a NUL byte.
        self.last_error = CString::new(error.to_string()).unwrap_or_default();
        error.into()
    }
}

/// A new decoder. `vnet_hdr`: the stream carries a vnet header length field
/// after each length (the filter's `vnet_hdr_support`). `max_frame_len`: the
/// largest payload accepted; 0 means QEMU's `NET_BUFSIZE` (69632).
///
/// A new decoder allocates no frame buffer; one grows, to the size of the
/// frame, only while a frame straddles two calls. Free it with
/// `qns_decoder_free()`. Never NULL; cannot panic (running out of memory
/// aborts).
#[no_mangle]
pub extern "C" fn qns_decoder_new(vnet_hdr: bool, max_frame_len: u32) -> *mut QnsDecoder {
    let max = or_default(max_frame_len, DEFAULT_MAX_FRAME_LEN);
    let decoder = FrameDecoder::new(vnet_hdr, max);
    let state = DecoderState {
        decoder,
        frames_id: QnsCounterId::Indev,
        errors_id: QnsCounterId::IndevErrors,
        last_error: CString::default(),
    };
    Box::into_raw(Box::new(QnsDecoder(Handle::new(state))))
}

/// Free a decoder. NULL is ignored, and so is a call from inside one of the
/// decoder's own frame callbacks (the decoder is then still in use). Cannot
/// panic.
///
/// # Safety
/// `decoder` must be NULL or from `qns_decoder_new()` and not freed before.
#[no_mangle]
pub unsafe extern "C" fn qns_decoder_free(decoder: *mut QnsDecoder) {
    let Some(d) = opt_arg!(decoder) else { return };
    if !d.0.is_busy() {
        // SAFETY: forwarded from this function's contract; no call uses it.
        unsafe { super::free_box(decoder) }
    }
}

/// Count the frames this decoder hands out in counter `frames_id`, and the
/// input it rejects in `errors_id` (both `QnsCounterId` values), instead of
/// `indev` and `indev-errors`: for an object with several inputs
/// (colo-compare). An unknown id is `QNS_RESULT_INVALID_ARGUMENT`.
///
/// # Safety
/// `decoder` must be NULL or a live decoder.
#[no_mangle]
pub unsafe extern "C" fn qns_decoder_count_as(
    decoder: *mut QnsDecoder,
    frames_id: u32,
    errors_id: u32,
) -> QnsResult {
    let decoder = &arg!(decoder).0;
    let (Some(frames_id), Some(errors_id)) = (
        QnsCounterId::from_raw(frames_id),
        QnsCounterId::from_raw(errors_id),
    ) else {
        return QnsResult::InvalidArgument;
    };
    decoder
        .with(|state| {
            state.frames_id = frames_id;
            state.errors_id = errors_id;
        })
        .into()
}

/// Decode the next `len` bytes of the stream. `callback` gets every complete
/// frame, in order. When `counters` is not NULL, each frame adds to its
/// `indev` counter and each rejection to `indev-errors` (one packet per
/// rejected frame; the bytes thrown away), or to those
/// `qns_decoder_count_as()` chose.
///
/// Returns `QNS_RESULT_OK`; or, when input was rejected, the problem met in
/// this chunk (`FRAME_TOO_LARGE`, `VNET_HEADER_TOO_LARGE`, `EMPTY_FRAME`; the
/// first one, except that `FRAME_TOO_LARGE` always wins; its text is in
/// `qns_decoder_error_message()`). Frames before and after a rejected one are
/// still delivered, except after `FRAME_TOO_LARGE`, which leaves the stream
/// out of step: everything after it is discarded, and every later call
/// (even with `len` 0) returns `QNS_RESULT_DESYNCHRONIZED`, until
/// `qns_decoder_reset()`. Report the former to the user; the latter needs no
/// new message.
///
/// # Safety
/// `decoder` must be NULL or a live decoder; `counters` NULL or live counters;
/// `buf` must point to `len` readable bytes (it may be NULL when `len` is 0);
/// `callback` must be safe to call with `opaque` as described at
/// `QnsFrameCallback`.
#[no_mangle]
pub unsafe extern "C" fn qns_decoder_feed(
    decoder: *mut QnsDecoder,
    counters: *mut QnsCounters,
    buf: *const u8,
    len: usize,
    callback: QnsFrameCallback,
    opaque: *mut c_void,
) -> QnsResult {
    let (decoder, Some(callback)) = (&arg!(decoder).0, callback) else {
        return QnsResult::NullPointer;
    };
    let chunk: &[u8] = match (len, buf.is_null()) {
        (0, _) => &[],
        (_, true) => return QnsResult::NullPointer,
        // SAFETY: buf is not NULL and the caller guarantees len readable bytes
        // that C does not change during the call.
        _ => unsafe { std::slice::from_raw_parts(buf, len) },
    };
    // The common case of a slow or small-chunked peer: the chunk only
    // continues a frame being assembled; nothing to count or report. It
    // skips the boundary, whose set-up costs as much as the append of a
    // small chunk: `FrameDecoder::absorb` cannot panic (it subtracts only
    // below the frame length it checked, grows the buffer to at most that
    // length, and running out of memory aborts rather than unwinds).
    if decoder.unguarded(|s| s.decoder.absorb(chunk)) == Some(true) {
        return QnsResult::Ok;
    }
    let counters = opt_arg!(counters).map(|c| &c.0);
    decoder
        .with(|state| feed_full(state, counters, chunk, callback, opaque))
        .into()
}

/// The rest of `qns_decoder_feed()` (frames to hand out, or problems to
/// report). Out of line, so that the fast path does not pay for this
/// path's stack frame: its register saves were a fifth of a call.
#[inline(never)]
fn feed_full(
    state: &mut DecoderState,
    counters: Option<&FilterCounters>,
    chunk: &[u8],
    callback: unsafe extern "C" fn(*mut c_void, *const u8, usize, u32),
    opaque: *mut c_void,
) -> QnsResult {
    let was_desynchronized = state.decoder.is_desynchronized();
    let mut first_error = None;
    // Counted once per chunk, not per frame: two atomic adds per frame
    // would cost more than decoding a small frame.
    let (mut frames, mut rejected) = ((0, 0), (0, 0));
    state.decoder.feed(chunk, |event| match event {
        Decoded::Frame(frame) => {
            frames = (frames.0 + 1, frames.1 + frame.payload.len());
            // SAFETY: qns_decoder_feed's caller guarantees the callback may
            // be called with opaque; the payload pointer and length describe
            // a live slice for the duration of the call.
            unsafe {
                callback(
                    opaque,
                    frame.payload.as_ptr(),
                    frame.payload.len(),
                    frame.vnet_hdr_len,
                )
            };
        }
        Decoded::Rejected { error, discarded } => {
            rejected = (rejected.0 + 1, rejected.1 + discarded);
            // A fatal error is the one to report, whatever came first:
            // after it the stream is out of step and nothing else is.
            if first_error.is_none() || matches!(error, DecodeError::FrameTooLarge { .. }) {
                first_error = Some(error);
            }
        }
        Decoded::Discarded(n) => rejected.1 += n,
    });
    count(counters, state.frames_id, frames);
    count(counters, state.errors_id, rejected);
    match first_error {
        Some(error) => state.record(error),
        None if was_desynchronized => QnsResult::Desynchronized,
        None => QnsResult::Ok,
    }
}

/// Add `packets` and `bytes` to counter `id`, if there are counters and
/// anything to add.
fn count(counters: Option<&FilterCounters>, id: QnsCounterId, (packets, bytes): (u64, usize)) {
    if let (Some(c), true) = (counters, packets > 0 || bytes > 0) {
        c.add(id, packets, bytes as u64);
    }
}

/// Start over with a clean state (for a new connection) and release the frame
/// buffer. The rest of a frame that was already rejected (and is being
/// skipped) is not reported again. If the stream ended inside a frame
/// otherwise, returns `QNS_RESULT_TRUNCATED_FRAME` (its text is in
/// `qns_decoder_error_message()`) and counts it in `counters`' `indev-errors`
/// (or the counter `qns_decoder_count_as()` chose): one packet, the bytes
/// received of it.
///
/// # Safety
/// `decoder` must be NULL or a live decoder; `counters` NULL or live counters.
#[no_mangle]
pub unsafe extern "C" fn qns_decoder_reset(
    decoder: *mut QnsDecoder,
    counters: *mut QnsCounters,
) -> QnsResult {
    let decoder = &arg!(decoder).0;
    let counters = opt_arg!(counters).map(|c| &c.0);
    let reset = decoder.with(|state| {
        let error = state.decoder.reset()?;
        if let DecodeError::Truncated { received, .. } = error {
            count(counters, state.errors_id, (1, received));
        }
        Some(state.record(error))
    });
    reset.map(|error| error.unwrap_or(QnsResult::Ok)).into()
}

/// The text of the decoder's last error ("" before any), for a log message;
/// never NULL, so it can go straight into a `%s`. The string belongs to the
/// decoder and stays valid until the next call on it. A NULL, busy or
/// poisoned decoder gets a static text saying so.
///
/// # Safety
/// `decoder` must be NULL or a live decoder.
#[no_mangle]
pub unsafe extern "C" fn qns_decoder_error_message(decoder: *const QnsDecoder) -> *const c_char {
    let decoder = &arg!(decoder, else c"no decoder".as_ptr()).0;
    decoder
        .with(|state| state.last_error.as_ptr())
        .unwrap_or_else(|e| super::qns_result_message(e as u32))
}
