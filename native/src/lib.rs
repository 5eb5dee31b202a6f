//! nvgred packet core.
//!
//! Layers, bottom up:
//! - [`wire`]: zero-copy views over packet buffers, validated parse/emit.
//! - [`dp`]: the decision core: a frame or NVGRE packet in, an [`dp::Action`] out. No I/O.
//! - [`io`]: TAP devices, the underlay socket, netlink, worker threads.
//! - [`binding`]: Node-API glue, nothing else.

pub mod binding;
pub mod dp;
pub mod io;
pub mod wire;
