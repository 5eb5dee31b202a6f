//! Frames from a VM port, as a worker reads a batch from a TAP (virtio-net
//! header, then the frame): the decision, then what the worker does before
//! the sockets (segments, checksums, probe copies, learning reports).
#![no_main]

use nvgred_fuzz::{check, input, reference, worker};
use nvgred_native::dp::offload::Offload;
use nvgred_native::dp::{self, Action, PacketBuf};
use std::cell::RefCell;

struct Batch {
    bufs: Vec<PacketBuf>,
    actions: Vec<Action>,
    extras: worker::Extras,
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch {
        bufs: (0..input::MAX_BATCH).map(|_| PacketBuf::new(worker::MAX_PACKET)).collect(),
        actions: Vec::new(),
        extras: worker::Extras::default(),
    });
}

fn one(data: &[u8]) {
    let snap = reference::snapshot();
    let (selector, frames) = input::vm_frames(data);
    let port = reference::port(selector);
    BATCH.with_borrow_mut(|Batch { bufs, actions, extras }| {
        let n = frames.len();
        // As `Tap::recv`: the header and the frame read at the start of the spare room.
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

        let decided = actions.clone();
        let whole: Vec<Vec<u8>> = bufs[..n].iter().map(|b| b.frame().to_vec()).collect();
        worker::prepare_extras(snap, &mut bufs[..n], actions, extras);
        for (i, &action) in decided.iter().enumerate() {
            if let (Action::Encap { pa, vsid, .. }, worker::Leaves::Segmented) = (action, extras.leaves[i]) {
                if matches!(actions[i], Action::Encap { .. }) {
                    let segs: Vec<&PacketBuf> = extras.list.iter().filter(|e| e.from == i).map(|e| &extras.bufs[e.buf]).collect();
                    check::segments(snap, &whole[i], pa, vsid, offloads[i], &segs);
                }
            }
        }
        for (pkt, i, action) in worker::encapsulated(&bufs[..n], actions, extras) {
            let Action::Encap { pa, vsid, .. } = action else { unreachable!() };
            let inner = check::encapsulated(snap, pkt.frame(), pa, vsid);
            let what = match (actions[i], extras.leaves[i]) {
                (Action::Probe { .. }, _) => "a flow-4 probe",
                (_, worker::Leaves::Segmented) => "a segment",
                _ => "an encapsulated frame",
            };
            check::fits(snap, pa, pkt.len(), what);
            if let Some(l) = worker::learned_from_vm(snap, actions[i], action, pkt) {
                check::learned_from_vm(snap, l, inner);
            }
        }
    });
}

nvgred_fuzz::fuzz_target!(one);
