//! Which queue of a multi-queue TAP a frame from the VM goes to, so which
//! worker reads it: a flow must stay on one worker, or two workers carry its
//! packets at once and reorder them on the wire.
//!
//! Left to itself the kernel does not keep a flow on one queue: it picks a
//! queue by hash for a new flow, then moves the flow to whichever queue last
//! wrote a packet of it toward the VM (its "automq" flow table), and the
//! packets coming back are written by the worker the underlay steering
//! chose. The move reorders the flow once. A steering program
//! (`TUNSETSTEERINGEBPF`) replaces that choice with a pure function of the
//! frame: its FlowID (`dp::flow_id`), a symmetric hash of the flow. The
//! underlay steers packets to workers by the same FlowID, so both
//! directions of a flow are handled by one worker.
//!
//! The program is eBPF, assembled here (no toolchain, no crate): loads are
//! relative to the link-layer header (`SKF_LL_OFF`), which is where the frame
//! starts both on the TAP's transmit path and in `BPF_PROG_TEST_RUN`.

use super::bpf::{self, *};
use super::sys::*;
use crate::dp::FLOW_MIX;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const ETH: i32 = 14;
const TCP: i32 = 6;
const UDP: i32 = 17;

/// r7 ^= the two 16-bit halves of r0 folded (source and destination port: symmetric).
fn xor_ports(a: &mut Asm) -> &mut Asm {
    a.alu_reg(MOV, R1, R0).alu(RSH, R1, 16).alu(AND, R0, 0xffff).alu_reg(XOR, R0, R1).alu_reg(XOR, R7, R0)
}

/// The steering program: returns the frame's FlowID (`dp::flow_id`, the
/// same function), which the kernel takes modulo the queue count.
fn program() -> Vec<Insn> {
    let mut a = Asm::default();
    // LD_ABS needs the context in r6; r7 gathers the symmetric hash.
    a.alu_reg(MOV, R6, R1).alu(MOV, R7, 0);
    a.load(H, 12).jump(JEQ, R0, 0x0800, "v4").jump(JEQ, R0, 0x86dd, "v6");

    // Not IP: the MACs.
    a.load(W, 0).alu_reg(XOR, R7, R0).load(W, 6).alu_reg(XOR, R7, R0);
    a.load(H, 4).alu_reg(XOR, R7, R0).load(H, 10).alu_reg(XOR, R7, R0).jump(JA, 0, 0, "mix");

    a.label("v4");
    a.load(W, ETH + 12).alu_reg(XOR, R7, R0).load(W, ETH + 16).alu_reg(XOR, R7, R0);
    a.load(B, ETH + 9).alu_reg(XOR, R7, R0).alu_reg(MOV, R8, R0);
    // A fragment (offset or more-fragments set) carries no ports of its own.
    a.load(H, ETH + 6).jump(JSET, R0, 0x3fff, "mix");
    a.jump(JEQ, R8, TCP, "ports4").jump(JEQ, R8, UDP, "ports4").jump(JA, 0, 0, "mix");
    a.label("ports4");
    a.load(B, ETH).alu(AND, R0, 0x0f).alu(LSH, R0, 2).alu_reg(MOV, R8, R0);
    a.load_ind(W, R8, ETH);
    xor_ports(&mut a).jump(JA, 0, 0, "mix");

    a.label("v6");
    for word in 0..8 {
        a.load(W, ETH + 8 + 4 * word).alu_reg(XOR, R7, R0);
    }
    a.load(B, ETH + 6).alu_reg(XOR, R7, R0).alu_reg(MOV, R8, R0);
    a.jump(JEQ, R8, TCP, "ports6").jump(JEQ, R8, UDP, "ports6").jump(JA, 0, 0, "mix");
    a.label("ports6");
    a.load(W, ETH + 40);
    xor_ports(&mut a);

    // The top byte of the 32-bit product (dp::encap's mix).
    a.label("mix");
    a.alu_reg(MOV, R0, R7).op(ALU | MUL, R0, 0, FLOW_MIX as i32).alu(RSH, R0, 24).exit();
    a.finish()
}

/// `_IOR('T', 224, int)`
const TUNSETSTEERINGEBPF: u64 = 0x8004_54e0;

/// A loaded steering program.
pub struct Steering(OwnedFd);

impl Steering {
    pub fn load() -> io::Result<Steering> {
        bpf::load(BPF_PROG_TYPE_SOCKET_FILTER, &program(), "the TAP flow-steering program (several workers need it)").map(Steering)
    }

    /// The program's descriptor (a packet socket fanout group takes it too).
    pub fn fd(&self) -> i32 {
        self.0.as_raw_fd()
    }

    /// Steer every queue of the TAP whose queue descriptor is `tap` (the program is the device's).
    pub fn attach(&self, tap: &OwnedFd) -> io::Result<()> {
        let fd: i32 = self.0.as_raw_fd();
        cvt(unsafe { ioctl(tap.as_raw_fd(), TUNSETSTEERINGEBPF as _, &fd as *const i32) }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::testkit::*;
    use crate::wire::{EtherType, IpProtocol};

    /// The leading fields of `union bpf_attr` for `BPF_PROG_TEST_RUN`.
    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
    }

    /// What the program returns for `frame` (a test run in the kernel).
    fn run(s: &Steering, frame: &[u8]) -> io::Result<u32> {
        let mut out = vec![0u8; frame.len() + 256];
        let mut attr = TestRun {
            prog_fd: s.0.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_size_out: out.len() as u32,
            data_in: frame.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            ..Default::default()
        };
        bpf::bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok(attr.retval)
    }

    fn tcp(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
        let mut l4 = vec![0u8; 20];
        l4[..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        l4[12] = 0x50;
        let ip = if src.contains(':') { ipv6(src, dst, IpProtocol::Tcp, 64, &l4) } else { ipv4(src, dst, IpProtocol::Tcp, 64, 0, &l4) };
        let ethertype = if src.contains(':') { EtherType::Ipv6 } else { EtherType::Ipv4 };
        ethernet(mac(CONTOSO1.1), mac(CONTOSO3.1), ethertype, &ip)
    }

    #[test]
    fn the_kernel_accepts_the_program_and_it_computes_the_cores_flow_id() {
        let s = Steering::load().expect("load (make test runs as root)");
        let h = |f: &[u8]| {
            let got = run(&s, f).unwrap();
            assert_eq!(got, crate::dp::flow_id(f) as u32, "the kernel and the core disagree on {f:02x?}");
            got
        };
        for (a, b) in [("10.0.1.101", "10.0.1.103"), ("fd00:1::101", "fd00:1::103")] {
            let there = h(&tcp(a, b, 40000, 5201));
            // Both directions of a flow hash alike (a request and its answer meet on one worker).
            assert_eq!(h(&tcp(b, a, 5201, 40000)), there, "{a} <-> {b}");
            // Other flows, other values: the ports are in it, and they spread over 2 queues.
            let others: Vec<u32> = (1..=16).map(|p| h(&tcp(a, b, 40000 + p, 5201))).collect();
            assert!(others.iter().any(|&o| o != there), "{a}: ports make no difference");
            assert!(others.iter().any(|&o| o % 2 == 0) && others.iter().any(|&o| o % 2 == 1), "{a}: flows all on one of 2 queues");
        }
        // IPv4 fragments: the ports are not looked at.
        let mut frag = tcp("10.0.1.101", "10.0.1.103", 40000, 5201);
        frag[14 + 6] = 0x20; // more fragments
        let mut other_ports = tcp("10.0.1.101", "10.0.1.103", 40001, 5202);
        other_ports[14 + 6] = 0x20;
        assert_eq!(h(&frag), h(&other_ports));
        // Not IP: the MACs, both ways.
        let req = arp_request(mac(CONTOSO1.1), CONTOSO1.0, CONTOSO3.0, mac(CONTOSO3.1));
        let back = arp_request(mac(CONTOSO3.1), CONTOSO3.0, CONTOSO1.0, mac(CONTOSO1.1));
        assert_eq!(h(&req), h(&back));
    }
}
