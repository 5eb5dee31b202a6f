//! Large TCP segments leave as one NVGRE packet, which the kernel (or a NIC
//! with GRE segmentation offload) cuts on the way out only if the path needs
//! it: over veth or to a GRE-offloading NIC nothing is cut at all, and the
//! receiving host reads the whole segment at once.
//!
//! A raw socket cannot send a packet larger than the MTU, and the virtio-net
//! header has no GRE segmentation type, so a large packet takes another way
//! into the kernel: the worker writes it, Ethernet + outer IP + GRE + the
//! VM's segment, into a private TAP device (`nvgso*`, one per daemon) with a
//! virtio-net header that describes the *inner* TCP segment. A tc program on
//! that TAP's ingress (assembled below) then only re-labels it: it takes the
//! outer header off and puts it back with `bpf_skb_adjust_room`'s encap
//! flags, which marks the packet as GRE-encapsulated for the kernel's
//! segmentation (`SKB_GSO_GRE`, inner headers, checksum offsets), and sends
//! it out of the PA's interface with `bpf_redirect_neigh` (the kernel routes
//! it and fills in the next hop's MAC). Every header byte is the worker's;
//! the packet never enters this host's IP stack.
//!
//! The PA's interface travels in the dummy Ethernet header: its ifindex in
//! the source MAC's last four bytes.
//!
//! Needs tcx (Linux 6.6) and CAP_BPF; without them the worker splits the
//! segments itself (`dp::offload::segment`).

use super::bpf::{self, *};
use super::sys::*;
use super::tap::annotate;
use crate::dp::offload::{Offload, VNET_HDR_LEN};
use crate::dp::PacketBuf;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

pub struct GsoPort {
    tap: OwnedFd,
    /// Keeps the program attached; closing it detaches.
    _link: OwnedFd,
    pub name: String,
}

const ETH: usize = 14;
/// Where the dummy Ethernet header carries the ifindex (source MAC bytes 2..6; 4-aligned on the program's stack).
const IFINDEX_AT: usize = 8;
/// The program's copy of the Ethernet + outer + inner Ethernet headers (the largest: IPv6).
const STACK: i16 = 80;

// Helpers (`enum bpf_func_id`) and their arguments.
const SKB_STORE_BYTES: i32 = 9;
const SKB_LOAD_BYTES: i32 = 26;
const SKB_ADJUST_ROOM: i32 = 50;
const REDIRECT_NEIGH: i32 = 152;
const ADJ_ROOM_MAC: i32 = 1;
const F_FIXED_GSO: u64 = 1 << 0;
const F_ENCAP_L3_IPV4: u64 = 1 << 1;
const F_ENCAP_L3_IPV6: u64 = 1 << 2;
const F_ENCAP_L4_GRE: u64 = 1 << 3;
const F_ENCAP_L2_ETH: u64 = 1 << 6;
const fn f_encap_l2(len: u64) -> u64 {
    (len & 0xff) << 56
}
const TC_ACT_SHOT: i32 = 2;

/// The re-labelling program: for an outer IPv4 or IPv6 header (`outer` bytes
/// of IP + GRE) after the Ethernet header, pop the outer header and the
/// inner Ethernet header, push them back as an encapsulation, and redirect.
fn program() -> Vec<Insn> {
    let mut a = Asm::default();
    a.alu_reg(MOV, R6, R1);
    a.load(H, 12).jump(JEQ, R0, 0x0800, "v4").jump(JEQ, R0, 0x86dd, "v6").jump(JA, 0, 0, "drop");
    for (label, outer, l3) in [("v4", 20 + 8, F_ENCAP_L3_IPV4), ("v6", 40 + 8, F_ENCAP_L3_IPV6)] {
        let moved = outer + ETH as i32; // outer IP + GRE + the inner Ethernet header
        a.label(label);
        // Save the headers: bpf_skb_load_bytes(skb, 0, stack, 14 + moved).
        a.alu_reg(MOV, R1, R6).alu(MOV, R2, 0).alu_reg(MOV, R3, R10).alu(ADD, R3, -(STACK as i32)).alu(MOV, R4, ETH as i32 + moved);
        a.call(SKB_LOAD_BYTES).jump(JNE, R0, 0, "drop");
        // Pop them, keeping the segment size.
        a.alu_reg(MOV, R1, R6).alu(MOV, R2, -moved).alu(MOV, R3, ADJ_ROOM_MAC).alu(MOV, R4, F_FIXED_GSO as i32);
        a.call(SKB_ADJUST_ROOM).jump(JNE, R0, 0, "drop");
        // Push them back as an NVGRE encapsulation (GRE with an inner Ethernet header).
        a.alu_reg(MOV, R1, R6).alu(MOV, R2, moved).alu(MOV, R3, ADJ_ROOM_MAC);
        a.load_imm64(R4, F_FIXED_GSO | l3 | F_ENCAP_L4_GRE | F_ENCAP_L2_ETH | f_encap_l2(ETH as u64));
        a.call(SKB_ADJUST_ROOM).jump(JNE, R0, 0, "drop");
        // Write the saved bytes back: bpf_skb_store_bytes(skb, 14, stack + 14, moved, 0).
        a.alu_reg(MOV, R1, R6).alu(MOV, R2, ETH as i32).alu_reg(MOV, R3, R10).alu(ADD, R3, -(STACK as i32) + ETH as i32);
        a.alu(MOV, R4, moved).alu(MOV, R5, 0).call(SKB_STORE_BYTES).jump(JNE, R0, 0, "drop");
        // Out of the PA's interface: bpf_redirect_neigh(ifindex, NULL, 0, 0).
        a.load_mem(W, R1, R10, -STACK + IFINDEX_AT as i16).alu(MOV, R2, 0).alu(MOV, R3, 0).alu(MOV, R4, 0);
        a.call(REDIRECT_NEIGH).exit();
    }
    a.label("drop").alu(MOV, R0, TC_ACT_SHOT).exit();
    a.finish()
}

impl GsoPort {
    /// Create the TAP and attach the program. Fails without tcx or CAP_BPF.
    pub fn open() -> io::Result<GsoPort> {
        let prog = bpf::load(BPF_PROG_TYPE_SCHED_CLS, &program(), "the underlay segmentation program")?;
        let tap = owned(unsafe { open(c"/dev/net/tun".as_ptr(), O_RDWR | O_NONBLOCK | O_CLOEXEC) })?;
        let mut ifr = ifreq::new("nvgso%d")?;
        ifr.set_i16(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        cvt(unsafe { ioctl(tap.as_raw_fd(), TUNSETIFF, &mut ifr) }).map_err(|e| annotate(e, "creating the underlay segmentation TAP"))?;
        let name = ifr.name();
        let ifindex = super::netlink::ifindex(&name)?;
        // Nothing of the host's own (IPv6 link-local, MLD) is to go out of it.
        super::netlink::set_link_quiet_up(ifindex).map_err(|e| annotate(e, &format!("bringing {name} up")))?;
        let link = bpf::attach_ingress(&prog, ifindex).map_err(|e| annotate(e, &format!("attaching to {name} (tcx, Linux 6.6)")))?;
        Ok(GsoPort { tap, _link: link, name })
    }

    /// Send `pkt` — outer IP + GRE (`outer` bytes) + a large TCP segment that
    /// its offload describes — out of interface `ifindex` as one packet.
    pub fn send(&self, pkt: &PacketBuf, outer: usize, ifindex: u32) -> io::Result<()> {
        let inner = pkt.offload;
        let (csum_start, csum_offset) =
            inner.csum.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a large segment without a partial checksum"))?;
        let shift = (ETH + outer) as u16;
        let mut vnet = [0u8; VNET_HDR_LEN];
        Offload { gso: inner.gso, gso_size: inner.gso_size, hdr_len: inner.hdr_len + shift, csum: Some((csum_start + shift, csum_offset)) }
            .emit(&mut vnet);
        let mut eth = [0u8; ETH];
        eth[0] = 0x02; // locally administered unicast: bpf_redirect_neigh drops multicast
        eth[6] = 0x02;
        eth[IFINDEX_AT..IFINDEX_AT + 4].copy_from_slice(&ifindex.to_ne_bytes());
        eth[12..14].copy_from_slice(&if pkt.frame()[0] >> 4 == 4 { [0x08, 0x00] } else { [0x86, 0xdd] });
        let frame = pkt.frame();
        let iov = [
            iovec { base: vnet.as_mut_ptr().cast(), len: vnet.len() },
            iovec { base: eth.as_mut_ptr().cast(), len: eth.len() },
            iovec { base: frame.as_ptr() as *mut _, len: frame.len() },
        ];
        cvt_size(unsafe { writev(self.tap.as_raw_fd(), iov.as_ptr(), iov.len() as i32) }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_accepts_the_program() {
        bpf::load(BPF_PROG_TYPE_SCHED_CLS, &program(), "the underlay segmentation program").expect("load (make test runs as root)");
    }
}
