//! Frames from a VM port, as a worker reads a batch (virtio-net header,
//! then the frame): the decision, then the worker's pipeline (`dp::Pipeline`:
//! segments, checksums, probe copies, learning reports) against a recorder
//! instead of sockets.
#![no_main]

use nvgred_fuzz::{check, input, reference};
use nvgred_native::dp::offload::Offload;
use nvgred_native::dp::testkit::Recorder;
use nvgred_native::dp::{self, Action, Batch, Counters, Direction, PacketBuf, Pipeline};
use std::cell::RefCell;

/// The largest frame a worker reads.
const MAX_PACKET: usize = 65535 + 256;

struct State {
    bufs: Vec<PacketBuf>,
    actions: Vec<Action>,
    pipeline: Pipeline,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        bufs: (0..input::MAX_BATCH).map(|_| PacketBuf::new(MAX_PACKET)).collect(),
        actions: Vec::new(),
        pipeline: Pipeline::new(MAX_PACKET),
    });
}

fn one(data: &[u8]) {
    let snap = reference::snapshot();
    let (selector, frames) = input::vm_frames(data);
    let port = reference::port(selector);
    // The selector's top bit: whether large segments may leave whole for the kernel to cut.
    let kernel_segments = selector & 0x80 != 0;
    STATE.with_borrow_mut(|State { bufs, actions, pipeline }| {
        let n = frames.len();
        // As a port's read: the header and the frame at the start of the spare room.
        for (b, (hdr, frame)) in bufs.iter_mut().zip(&frames) {
            b.reset();
            b.spare_mut()[..hdr.len()].copy_from_slice(hdr);
            b.spare_mut()[hdr.len()..hdr.len() + frame.len()].copy_from_slice(frame);
            b.set_len(hdr.len() + frame.len());
            b.offload = Offload::parse(hdr);
            b.narrow(hdr.len(), frame.len());
        }
        let offloads: Vec<Offload> = bufs[..n].iter().map(|b| b.offload).collect();
        actions.clear();
        dp::on_vm_frames(snap, port, &mut bufs[..n], actions);
        assert_eq!(actions.len(), n, "one action per frame");
        for i in 0..n {
            check::vm_action(snap, port, frames[i].1, offloads[i], &bufs[i], actions[i]);
        }
        let decided: Vec<(Vec<u8>, Offload)> = bufs[..n].iter().map(|b| (b.frame().to_vec(), b.offload)).collect();
        let mut rec = Recorder { kernel_segments, ..Recorder::default() };
        let counters = Counters::default();
        pipeline.carry_out(Batch { snap, dir: Direction::FromVm, bufs: &mut bufs[..n], actions, outer_src: &[], counters: &counters }, &mut rec);
        check::vm_pipeline(snap, actions, &decided, &rec);
    });
}

nvgred_fuzz::fuzz_target!(one);
