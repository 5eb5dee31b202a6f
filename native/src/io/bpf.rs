//! eBPF without a toolchain: a tiny assembler, the `bpf(2)` calls to load a
//! program and to attach one to a device's ingress (tcx). The programs
//! themselves live with their users (`steering`, `gso`).

use super::sys::*;
use std::ffi::{c_long, c_void};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// One eBPF instruction (`struct bpf_insn`): `regs` is dst (low nibble), src (high).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// <linux/bpf_common.h>, <linux/bpf.h>
pub const LD: u8 = 0x00;
pub const LDX: u8 = 0x01;
pub const ALU: u8 = 0x04;
pub const ALU64: u8 = 0x07;
pub const JMP: u8 = 0x05;
pub const ABS: u8 = 0x20;
pub const IND: u8 = 0x40;
pub const MEM: u8 = 0x60;
pub const IMM: u8 = 0x00;
pub const W: u8 = 0x00;
pub const H: u8 = 0x08;
pub const B: u8 = 0x10;
pub const DW: u8 = 0x18;
pub const MOV: u8 = 0xb0;
pub const ADD: u8 = 0x00;
pub const XOR: u8 = 0xa0;
pub const MUL: u8 = 0x20;
pub const AND: u8 = 0x50;
pub const LSH: u8 = 0x60;
pub const RSH: u8 = 0x70;
pub const X: u8 = 0x08;
pub const JA: u8 = 0x00;
pub const JEQ: u8 = 0x10;
pub const JNE: u8 = 0x50;
pub const JSET: u8 = 0x40;
pub const CALL: u8 = 0x80;
pub const EXIT: u8 = 0x90;
/// Offsets from the link-layer header (`SKF_LL_OFF`), for `LD_ABS`/`LD_IND`.
pub const LL: i32 = -0x20_0000;

pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R5: u8 = 5;
pub const R6: u8 = 6;
pub const R7: u8 = 7;
pub const R8: u8 = 8;
/// The frame pointer (read-only): the stack is below it.
pub const R10: u8 = 10;

/// A tiny assembler: jumps name labels, resolved at the end.
#[derive(Default)]
pub struct Asm {
    code: Vec<Insn>,
    /// (instruction index, label) of each jump.
    jumps: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    pub fn op(&mut self, code: u8, dst: u8, src: u8, imm: i32) -> &mut Self {
        self.code.push(Insn { code, regs: dst | src << 4, off: 0, imm });
        self
    }
    /// r0 = the `size` bytes at link-layer offset `at`, host order (socket filters).
    pub fn load(&mut self, size: u8, at: i32) -> &mut Self {
        self.op(LD | ABS | size, 0, 0, LL + at)
    }
    /// r0 = the `size` bytes at link-layer offset `index` + `at`.
    pub fn load_ind(&mut self, size: u8, index: u8, at: i32) -> &mut Self {
        self.op(LD | IND | size, 0, index, LL + at)
    }
    /// dst = *(size *)(src + off)
    pub fn load_mem(&mut self, size: u8, dst: u8, src: u8, off: i16) -> &mut Self {
        self.code.push(Insn { code: LDX | MEM | size, regs: dst | src << 4, off, imm: 0 });
        self
    }
    /// dst = a 64-bit constant (a two-slot instruction).
    pub fn load_imm64(&mut self, dst: u8, v: u64) -> &mut Self {
        self.op(LD | IMM | DW, dst, 0, v as u32 as i32).op(0, 0, 0, (v >> 32) as u32 as i32)
    }
    pub fn alu(&mut self, op: u8, dst: u8, imm: i32) -> &mut Self {
        self.op(ALU64 | op, dst, 0, imm)
    }
    pub fn alu_reg(&mut self, op: u8, dst: u8, src: u8) -> &mut Self {
        self.op(ALU64 | op | X, dst, src, 0)
    }
    /// Call kernel helper number `helper` (arguments in r1..r5, result in r0).
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.op(JMP | CALL, 0, 0, helper)
    }
    /// `if reg <op> imm goto label` (`JA`: always).
    pub fn jump(&mut self, op: u8, reg: u8, imm: i32, label: &'static str) -> &mut Self {
        self.jumps.push((self.code.len(), label));
        self.op(JMP | op, reg, 0, imm)
    }
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.push((name, self.code.len()));
        self
    }
    pub fn exit(&mut self) -> &mut Self {
        self.op(JMP | EXIT, 0, 0, 0)
    }
    pub fn finish(mut self) -> Vec<Insn> {
        for &(at, name) in &self.jumps {
            let target = self.labels.iter().find(|(n, _)| *n == name).map(|&(_, i)| i).expect("label");
            self.code[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.code
    }
}

// bpf(2)
#[cfg(target_arch = "x86_64")]
const SYS_BPF: c_long = 321;
#[cfg(target_arch = "aarch64")]
const SYS_BPF: c_long = 280;
const BPF_PROG_LOAD: c_long = 5;
#[cfg(test)]
pub const BPF_PROG_TEST_RUN: c_long = 10;
const BPF_LINK_CREATE: c_long = 28;
pub const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `enum bpf_attach_type`: tcx, Linux 6.6 and later.
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

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

/// The leading fields of `union bpf_attr` for `BPF_LINK_CREATE` (tcx: no
/// relative program, no expected revision).
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    pad: u32,
    expected_revision: u64,
}

pub fn bpf<T>(cmd: c_long, attr: &mut T) -> io::Result<c_long> {
    let r = unsafe { syscall(SYS_BPF, cmd, attr as *mut T as *mut c_void, std::mem::size_of::<T>() as u32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Load `insns` as a program of `prog_type`; an error says `what` it was,
/// with the verifier's log.
pub fn load(prog_type: u32, insns: &[Insn], what: &str) -> io::Result<OwnedFd> {
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoad {
        prog_type,
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
        let hint = if e.raw_os_error() == Some(1) { " (needs CAP_BPF)" } else { "" };
        let detail = if verifier.is_empty() { String::new() } else { format!(": {verifier}") };
        io::Error::new(e.kind(), format!("loading {what}: {e}{hint}{detail}"))
    })?;
    owned(fd as i32)
}

/// Run `prog` on every packet the device `ifindex` receives, before the
/// stack sees it (tc ingress, by a tcx link). The link is the returned
/// descriptor: closing it detaches the program.
pub fn attach_ingress(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    attach(prog, ifindex, BPF_TCX_INGRESS)
}

/// Run `prog` on every packet the device `ifindex` sends (tc egress, by a tcx link).
pub fn attach_egress(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    attach(prog, ifindex, BPF_TCX_EGRESS)
}

fn attach(prog: &OwnedFd, ifindex: u32, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate { prog_fd: prog.as_raw_fd() as u32, target_ifindex: ifindex, attach_type, ..Default::default() };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    owned(fd as i32)
}
