//! For the lab's underlay switch, not the daemon: make an interface behave
//! like a switch's trunk port for one VLAN when the others are access
//! ports of it (a Linux bridge with VLAN filtering does this; kernels
//! without it, like these machines', need this instead). Frames leaving
//! the interface get the VLAN's 802.1Q tag; frames arriving with it lose
//! it before the bridge sees them. Two tc programs of a few instructions,
//! assembled here like the others (`io::bpf`).

use super::bpf::{self, *};
use std::io;
use std::os::fd::OwnedFd;

const SKB_VLAN_PUSH: i32 = 18;
const SKB_VLAN_POP: i32 = 19;
/// `struct __sk_buff`: vlan_present, vlan_tci.
const VLAN_PRESENT: i16 = 20;
const VLAN_TCI: i16 = 24;
const TC_ACT_OK: i32 = 0;

/// Egress: push the tag (ETH_P_8021Q, big-endian, as the helper takes it).
fn push(vid: u16) -> Vec<Insn> {
    let mut a = Asm::default();
    a.alu(MOV, R2, 0x8100u16.to_be() as i32).alu(MOV, R3, vid as i32).call(SKB_VLAN_PUSH);
    a.alu(MOV, R0, TC_ACT_OK).exit();
    a.finish()
}

/// Ingress: pop the tag if it is the VLAN's.
fn pop(vid: u16) -> Vec<Insn> {
    let mut a = Asm::default();
    a.alu_reg(MOV, R6, R1);
    a.load_mem(W, R0, R6, VLAN_PRESENT).jump(JEQ, R0, 0, "ok");
    a.load_mem(W, R0, R6, VLAN_TCI).alu(AND, R0, 0x0fff).jump(JNE, R0, vid as i32, "ok");
    a.alu_reg(MOV, R1, R6).call(SKB_VLAN_POP);
    a.label("ok").alu(MOV, R0, TC_ACT_OK).exit();
    a.finish()
}

/// Make `ifindex` a trunk port of VLAN `vid`; the returned links keep it so.
pub fn trunk_port(ifindex: u32, vid: u16) -> io::Result<[OwnedFd; 2]> {
    let out = bpf::load(BPF_PROG_TYPE_SCHED_CLS, &push(vid), "the trunk port's tagging program")?;
    let inp = bpf::load(BPF_PROG_TYPE_SCHED_CLS, &pop(vid), "the trunk port's untagging program")?;
    Ok([bpf::attach_egress(&out, ifindex)?, bpf::attach_ingress(&inp, ifindex)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_accepts_both_programs() {
        for (prog, what) in [(push(100), "push"), (pop(100), "pop")] {
            bpf::load(BPF_PROG_TYPE_SCHED_CLS, &prog, what).expect("load (make test runs as root)");
        }
    }
}
