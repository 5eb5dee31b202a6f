//! Why a packet was dropped: a closed set, each value counted per direction and
//! exported as the `reason` label of `nvgre_dropped_packets_total`.

/// Where the dropped packet came from (the `direction` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A frame read from a VM adapter (TAP).
    FromVm = 0,
    /// A packet received on the underlay.
    FromUnderlay = 1,
    /// A frame read from the HNV gateway's uplink.
    FromUplink = 2,
}

impl Direction {
    pub const ALL: [Direction; 3] = [Direction::FromVm, Direction::FromUnderlay, Direction::FromUplink];

    pub fn name(self) -> &'static str {
        match self {
            Direction::FromVm => "from_vm",
            Direction::FromUnderlay => "from_underlay",
            Direction::FromUplink => "from_uplink",
        }
    }
}

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Every reason the dataplane drops a packet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = DropReason::ALL.len();

            /// The Prometheus label value.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// A header is shorter than its format requires.
    Truncated => "truncated",
    /// A header is long enough but invalid (bad version, length or checksum).
    Malformed => "malformed",
    /// From a VM: the source MAC (Ethernet or ARP sender) is not the adapter's.
    /// From the underlay: the inner source MAC does not belong, by the lookup
    /// records of the routing domain, to the outer source PA.
    SpoofedSource => "spoofed_source",
    /// An 802.1Q/802.1ad tag: VM adapters are access ports and NVGRE forbids inner tags.
    VlanTagged => "vlan_tagged",
    /// The destination MAC is not a VM of the VSID (locally, or by lookup record).
    UnknownDestination => "unknown_destination",
    /// The destination MAC belongs to another VSID: only the router crosses VSIDs.
    VsidMismatch => "vsid_mismatch",
    /// No customer route of the routing domain covers the destination CA.
    NoRoute => "no_route",
    /// A customer route matched but no lookup record holds the destination (or next hop) CA.
    NoLookupRecord => "no_lookup_record",
    /// A routed packet's TTL ran out.
    TtlExceeded => "ttl_exceeded",
    /// The lookup record's rule is `none`: nothing to encapsulate with.
    TranslationNone => "translation_none",
    /// Addressed to a gateway address but not something the gateway answers (ICMP echo).
    GatewayUnsupported => "gateway_unsupported",
    /// An EtherType or IP version the router does not handle.
    UnsupportedProtocol => "unsupported_protocol",
    /// ARP never crosses the underlay (but for L2Only learning): it is answered or flooded on the host.
    ArpSuppressed => "arp_suppressed",
    /// Neighbor Discovery never crosses the underlay: it is answered or flooded on the host.
    NdSuppressed => "nd_suppressed",
    /// Too large for the underlay once encapsulated (the VM gets an ICMP error, or nothing without DF).
    MtuExceeded => "mtu_exceeded",
    /// No local provider address of the family the destination PA needs.
    NoProviderAddress => "no_provider_address",
    /// The outer destination is not one of this host's provider addresses.
    NotProviderAddress => "not_provider_address",
    /// For a PA on a VLAN, it came in on another VLAN or untagged; for an
    /// untagged PA, on a PA's VLAN.
    WrongVlan => "wrong_vlan",
    /// GRE C or S bit set, K bit clear or reserved bits set (RFC 7637 §3.2).
    GreFlags => "gre_flags",
    /// GRE version is not 0.
    GreVersion => "gre_version",
    /// GRE protocol type is not 0x6558 (Transparent Ethernet Bridging).
    GreProtocol => "gre_protocol",
    /// The VSID in the key has no local VM adapter.
    UnknownVsid => "unknown_vsid",
    /// The frame came from, or was for, a port that no longer exists.
    PortGone => "port_gone",
    /// Writing to a VM adapter or the underlay failed (buffer full, device error).
    TxError => "tx_error",
    /// The VM adapter's device is down (gone from under the daemon, or its VM is not running).
    AdapterDown => "adapter_down",
    /// The kernel dropped frames from an attached VM adapter before a worker
    /// read them: its socket's queue was full (the VM sent faster than the workers read).
    RxOverrun => "rx_overrun",
    /// A vhost-user guest's ring lied (a descriptor outside its memory, a loop, indices beyond
    /// the ring): the frame was dropped, or the ring stopped until the guest restarts it.
    GuestRing => "guest_ring",
    /// A bug in nvgred met by this packet: the worker dropped the batch that carried it
    /// and went on (each such batch also counts `nvgre_worker_panics_total`).
    InternalError => "internal_error",
    /// NAT: a packet from the uplink, or an ICMP error about one, that no mapping (dynamic or
    /// static) of its external address and port takes: unsolicited, never delivered to a tenant.
    NatNoMapping => "nat_no_mapping",
    /// NAT: a new mapping refused, the NAT's or the gateway's limit on mappings reached.
    NatTableFull => "nat_table_full",
    /// NAT: a new mapping refused, no free external port left for it in the NAT's range.
    NatPortsExhausted => "nat_ports_exhausted",
    /// NAT: an IPv4 fragment (the NAT translates whole packets; fragments carry no ports).
    NatFragment => "nat_fragment",
    /// NAT: sent to the NAT for a destination that a customer route of its routing domain
    /// covers: that traffic is routed by the tenant hosts, never translated.
    NatInsideDestination => "nat_inside_destination",
    /// NAT: translated for the uplink, but its gateway has not answered ARP (yet).
    UplinkUnresolved => "uplink_unresolved",
}
