//! Statistics for QEMU's network filters, and the filter-redirector's wire
//! format, behind a C ABI that QEMU's C glue calls.
//!
//! The safe Rust parts, one idea per module:
//! - [`wire`]: the redirector wire format (frame headers, encoding);
//! - [`decoder`]: the indev receive path, a streaming frame decoder;
//! - [`outdev`]: the outdev send queue: non-blocking, batched, bounded;
//! - [`counters`]: per-filter packet and byte counters (atomics);
//! - [`stats`]: the list behind `query-netfilter-stats` and `query-stats`,
//!   and the `query-stats-schemas` of each provider;
//! - [`result`]: the result codes of the C ABI, and their messages;
//! - [`handle`]: the state behind a C handle, with the panic boundary.
//!
//! [`ffi`] is the C ABI over them and the only module with `unsafe` code; the
//! header `include/qemu_netfilter_stats.h` is generated from it.

#![deny(unsafe_code)]

pub mod counters;
pub mod decoder;
#[allow(unsafe_code)]
pub mod ffi;
pub mod handle;
pub mod outdev;
pub mod result;
pub mod stats;
pub mod wire;
