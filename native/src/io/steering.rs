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

use super::sys::*;
use crate::dp::FLOW_MIX;
use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// One eBPF instruction (`struct bpf_insn`): `regs` is dst (low nibble), src (high).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// <linux/bpf_common.h>, <linux/bpf.h>
const LD: u8 = 0x00;
const ALU: u8 = 0x04;
const ALU64: u8 = 0x07;
const JMP: u8 = 0x05;
const ABS: u8 = 0x20;
const IND: u8 = 0x40;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const MOV: u8 = 0xb0;
const XOR: u8 = 0xa0;
const MUL: u8 = 0x20;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const X: u8 = 0x08;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JSET: u8 = 0x40;
const EXIT: u8 = 0x90;
/// Offsets from the link-layer header (`SKF_LL_OFF`).
const LL: i32 = -0x20_0000;

const R0: u8 = 0;
const R1: u8 = 1;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;

const ETH: i32 = 14;
const TCP: i32 = 6;
const UDP: i32 = 17;

/// A tiny assembler: jumps name labels, resolved at the end.
#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    /// (instruction index, label) of each jump.
    jumps: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, imm: i32) -> &mut Self {
        self.code.push(Insn { code, regs: dst | src << 4, off: 0, imm });
        self
    }
    /// r0 = the `size` bytes at link-layer offset `at` (+ `index`), host order.
    fn load(&mut self, size: u8, at: i32) -> &mut Self {
        self.op(LD | ABS | size, 0, 0, LL + at)
    }
    fn load_ind(&mut self, size: u8, index: u8, at: i32) -> &mut Self {
        self.op(LD | IND | size, 0, index, LL + at)
    }
    fn alu(&mut self, op: u8, dst: u8, imm: i32) -> &mut Self {
        self.op(ALU64 | op, dst, 0, imm)
    }
    fn alu_reg(&mut self, op: u8, dst: u8, src: u8) -> &mut Self {
        self.op(ALU64 | op | X, dst, src, 0)
    }
    /// `if reg <op> imm goto label` (`JA`: always).
    fn jump(&mut self, op: u8, reg: u8, imm: i32, label: &'static str) -> &mut Self {
        self.jumps.push((self.code.len(), label));
        self.op(JMP | op, reg, 0, imm)
    }
    fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.push((name, self.code.len()));
        self
    }
    fn exit(&mut self) -> &mut Self {
        self.op(JMP | EXIT, 0, 0, 0)
    }
    /// r7 ^= the two 16-bit halves of r0 folded (source and destination port: symmetric).
    fn xor_ports(&mut self) -> &mut Self {
        self.alu_reg(MOV, R1, R0).alu(RSH, R1, 16).alu(AND, R0, 0xffff).alu_reg(XOR, R0, R1).alu_reg(XOR, R7, R0)
    }
    fn finish(mut self) -> Vec<Insn> {
        for &(at, name) in &self.jumps {
            let target = self.labels.iter().find(|(n, _)| *n == name).map(|&(_, i)| i).expect("label");
            self.code[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.code
    }
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
    a.load_ind(W, R8, ETH).xor_ports().jump(JA, 0, 0, "mix");

    a.label("v6");
    for word in 0..8 {
        a.load(W, ETH + 8 + 4 * word).alu_reg(XOR, R7, R0);
    }
    a.load(B, ETH + 6).alu_reg(XOR, R7, R0).alu_reg(MOV, R8, R0);
    a.jump(JEQ, R8, TCP, "ports6").jump(JEQ, R8, UDP, "ports6").jump(JA, 0, 0, "mix");
    a.label("ports6");
    a.load(W, ETH + 40).xor_ports();

    // The top byte of the 32-bit product (dp::encap's mix).
    a.label("mix");
    a.alu_reg(MOV, R0, R7).op(ALU | MUL, R0, 0, FLOW_MIX as i32).alu(RSH, R0, 24).exit();
    a.finish()
}

// bpf(2)
#[cfg(target_arch = "x86_64")]
const SYS_BPF: std::ffi::c_long = 321;
#[cfg(target_arch = "aarch64")]
const SYS_BPF: std::ffi::c_long = 280;
const BPF_PROG_LOAD: std::ffi::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `_IOR('T', 224, int)`
const TUNSETSTEERINGEBPF: u64 = 0x8004_54e0;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

fn bpf<T>(cmd: std::ffi::c_long, attr: &mut T) -> io::Result<std::ffi::c_long> {
    let r = unsafe { syscall(SYS_BPF, cmd, attr as *mut T as *mut c_void, std::mem::size_of::<T>() as u32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A loaded steering program.
pub struct Steering(OwnedFd);

impl Steering {
    pub fn load() -> io::Result<Steering> {
        let insns = program();
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: c"GPL".as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            ..Default::default()
        };
        let fd = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
            let verifier = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).trim().to_string();
            let hint = if e.raw_os_error() == Some(1) { " (several workers need CAP_BPF)" } else { "" };
            let detail = if verifier.is_empty() { String::new() } else { format!(": {verifier}") };
            io::Error::new(e.kind(), format!("loading the TAP flow-steering program: {e}{hint}{detail}"))
        })?;
        owned(fd as i32).map(Steering)
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

    const BPF_PROG_TEST_RUN: std::ffi::c_long = 10;

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
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
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
