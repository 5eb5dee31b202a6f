//! Frames the core emits, written to a pcap and decoded by tshark: what an
//! operator sees in Wireshark must be NVGRE as RFC 7637 defines it.

use nvgred_native::dp::testkit::*;
use nvgred_native::dp::{on_vm_frame, Action, PacketBuf, Snapshot};
use nvgred_native::wire::pcap::{LinkType, PcapWriter};
use std::process::Command;
use std::time::Duration;

#[test]
fn tshark_decodes_emitted_nvgre_as_gre_0x6558_with_vsid_keys() {
    let snap = Snapshot::build(&host1());
    let sent = [
        (PORT_CONTOSO1, udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 4000, 5000, 0), 6000u32, HOST2_PA, "10.0.1.103"),
        (PORT_CONTOSO1, ping(CONTOSO1, mac(HOST1_GW_MAC), "10.1.3.100", 64), 6001, GW_PA, "10.1.3.100"),
        (PORT_FABRIKAM1, udp(FABRIKAM1, mac(FABRIKAM3.1), FABRIKAM3.0, 1, 2, 0), 7000, HOST2_PA, "10.0.1.103"),
    ];
    let path = std::env::temp_dir().join(format!("nvgred-tshark-{}.pcap", std::process::id()));
    let mut keys = Vec::new();
    {
        let mut w = PcapWriter::new(std::fs::File::create(&path).unwrap(), LinkType::Raw).unwrap();
        for (i, (port, frame, vsid, _, _)) in sent.iter().enumerate() {
            let mut b = PacketBuf::from_frame(frame);
            let action = on_vm_frame(&snap, *port, &mut b);
            assert!(matches!(action, Action::Encap { vsid: v, .. } if v == *vsid), "{action:?}");
            let key = u32::from_be_bytes(b.frame()[24..28].try_into().unwrap());
            keys.push(key);
            w.write_packet(Duration::from_millis(i as u64), b.frame()).unwrap();
        }
    }
    let out = Command::new("tshark")
        .args(["-r", path.to_str().unwrap(), "-T", "fields", "-E", "separator=|", "-E", "aggregator=;"])
        .args(["-e", "ip.proto", "-e", "gre.proto", "-e", "gre.key", "-e", "eth.src", "-e", "eth.dst", "-e", "ip.dst"])
        .output()
        .expect("tshark is installed by `make test`");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), sent.len(), "{text}");
    for ((row, (_, frame, vsid, pa, inner_dst)), key) in rows.iter().zip(&sent).zip(&keys) {
        // Repeated fields (outer, then inner IP) are joined with ';'.
        let ip_proto: Vec<&str> = row[0].split(';').collect();
        assert_eq!(ip_proto[0], "47", "outer protocol is GRE: {row:?}");
        assert_eq!(row[1], "0x6558", "GRE protocol is Transparent Ethernet Bridging");
        let tshark_key = u32::from_str_radix(row[2].trim_start_matches("0x"), 16).unwrap();
        assert_eq!(tshark_key, *key);
        assert_eq!(tshark_key >> 8, *vsid, "key = VSID << 8 | FlowID");
        let inner_src = nvgred_native::wire::MacAddr::from_bytes(&frame[6..12]).to_string();
        assert_eq!(row[3], inner_src, "inner Ethernet source is the VM's");
        let ip_dst: Vec<&str> = row[5].split(';').collect();
        assert_eq!(ip_dst, [*pa, *inner_dst], "outer destination PA, inner destination CA");
    }
}
