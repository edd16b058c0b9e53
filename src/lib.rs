//! Statistics for QEMU's network filters, and the filter-redirector's wire
//! format, behind a C ABI that QEMU's C glue calls.
//!
//! The safe Rust parts, one idea per module:
//! - [`decoder`]: the indev receive path, a streaming frame decoder;
//! - [`encoder`]: the outdev send path, one buffer per frame;
//! - [`outdev`]: the outdev send queue: non-blocking, batched, bounded;
//! - [`counters`]: per-filter packet and byte counters (atomics);
//! - [`stats`]: the list behind `query-netfilter-stats`.
//!
//! [`ffi`] is the C ABI over them and the only module with `unsafe` code; the
//! header `include/qemu_netfilter_stats.h` is generated from it.

#![deny(unsafe_code)]

pub mod counters;
pub mod decoder;
pub mod encoder;
#[allow(unsafe_code)]
pub mod ffi;
pub mod outdev;
pub mod stats;
