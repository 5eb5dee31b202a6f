//! The HNV gateway in the decision core: the policy's gateway section, the
//! NAT's outbound and inbound paths, the uplink's ARP.

use super::nat::{Proto, StaticMapping};
use super::policy::{GatewayNat, Uplink};
use super::testkit::*;
use super::*;

/// The spec's gateway host: host 1's policy, with an uplink and the NATs of
/// Contoso and Fabrikam on one external address.
pub(super) fn gateway_policy() -> Policy {
    let mut p = host1();
    let nats = gateway_nats();
    p.uplink = Some(Uplink {
        ifindex: 9,
        mtu: 1500,
        mac: mac("02:00:00:00:09:09"),
        gateway: v4("131.107.10.1"),
        addresses: vec![(v4(NAT_EXTERNAL), 24)],
    });
    p.nats = nats
        .into_iter()
        .zip([(6001, "60:01:60:01:03:01"), (7001, "70:01:70:01:03:01")])
        .map(|(nat, (vsid, m))| GatewayNat { nat, vsid, mac: mac(m) })
        .collect();
    p
}

#[test]
fn the_gateway_section_round_trips() {
    let mut p = gateway_policy();
    // Decoded entries are named by position (the control plane keeps the names).
    for (i, g) in p.nats.iter_mut().enumerate() {
        g.nat.name = format!("nat[{i}]");
    }
    p.nats[1].nat.static_mappings.push(StaticMapping { proto: Proto::Udp, external_port: 53, vsid: 7000, internal_address: v4("10.0.1.5"), internal_port: 5353 });
    let buf = p.encode();
    assert_eq!(Policy::decode(&buf), Ok(p.clone()));
    // Counts that disagree with the buffer are refused, not trusted.
    let mut short = buf.clone();
    short.truncate(buf.len() - 1);
    assert!(Policy::decode(&short).is_err());
    let no_gateway = Policy { uplink: None, nats: vec![], ..p };
    assert_eq!(Policy::decode(&no_gateway.encode()), Ok(no_gateway));
}
