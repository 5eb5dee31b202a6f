-- nvgre.lua: a Wireshark / tshark dissector for NVGRE (RFC 7637, Network
-- Virtualization using Generic Routing Encapsulation), written for nvgred.
--
-- Wireshark 4.0 (Debian 12) dissects NVGRE packets as plain GRE with protocol
-- type 0x6558 (Transparent Ethernet Bridging) and shows only the raw 32-bit
-- `gre.key`. This script adds a protocol `nvgre` between GRE and the inner
-- Ethernet frame:
--
--   nvgre.vsid    uint32  Virtual Subnet ID, the upper 24 bits of the GRE key
--   nvgre.flowid  uint8   FlowID, the low 8 bits of the GRE key
--
-- so `nvgre.vsid == 6000` and `nvgre.flowid == 1` work as display filters and
-- as `-e` fields, the Info column gets " [NVGRE VSID 6000 FlowID 1]" appended,
-- and the inner Ethernet frame is still dissected (ARP, IPv4, ICMP...).
--
-- INSTALL (any one of):
--   * per user:   mkdir -p ~/.local/lib/wireshark/plugins
--                 cp wireshark/nvgre.lua ~/.local/lib/wireshark/plugins/
--   * system:     cp wireshark/nvgre.lua /usr/lib/x86_64-linux-gnu/wireshark/plugins/
--                 (Debian/Ubuntu amd64; `tshark -G folders` prints yours: "Lua Plugins")
--   * one run:    tshark -X lua_script:wireshark/nvgre.lua -r underlay.pcap
--                 wireshark -X lua_script:wireshark/nvgre.lua underlay.pcap
--   Check it is loaded (-G must come first):
--                 tshark -G protocols -X lua_script:wireshark/nvgre.lua | grep -w nvgre
--   Loading it twice (installed and -X) fails with "Proto_new: there cannot
--   be two protocols with the same description": use one or the other.
--
-- RUNNING AS ROOT (checked with Debian 12's tshark 4.0.17): Lua runs as root.
-- The switches live in the global /usr/share/wireshark/init.lua, which ships
-- `enable_lua = true` and `run_user_scripts_when_superuser = true`, so both
-- `-X lua_script:` and the personal plugin folder load under root; tshark
-- only warns "Running as user "root" and group "root". This could be
-- dangerous.". Were the second switch false, root would skip `-X lua_script:`
-- and personal plugins, and only the global plugin folder
-- (/usr/lib/x86_64-linux-gnu/wireshark/plugins/) would load. There is no
-- command-line preference for either switch, and environment overrides do not
-- help root: tshark ignores WIRESHARK_DATA_DIR (which would pick another
-- init.lua) when started as root (it honours it for other users).
--
-- HOW THE KEY IS FOUND (Wireshark 4.0): packet-gre.c dissects the GRE header
-- itself (flags, optional checksum+reserved1 when C is set, key when K is set,
-- sequence number when S is set), adds `gre.key` to the tree, then hands only
-- the payload to the "gre.proto" dissector table, keyed by the protocol type.
-- A Lua dissector receives only (tvb, pinfo, tree), and that tvb starts after
-- the GRE header, so this script:
--   1. replaces the table's entry for 0x6558 with this dissector (the stock
--      entry is eth_withoutfcs, which we call ourselves afterwards), and
--   2. reads the key that GRE already parsed through a field extractor,
--      Field.new("gre.key"). GRE adds that item before it calls the table,
--      and Wireshark's Lua layer asks for every extracted field on every
--      packet, so the value is there in tshark too, with or without -V, -Y
--      or -T fields (checked with 4.0.17).
-- The extractor returns every `gre.key` of the packet so far (GRE in GRE
-- gives several). We take the one whose bytes sit right before our payload:
-- its offset in the frame plus 4 (plus 4 more for a sequence number, S bit)
-- must equal the payload's offset, `tvb:offset()`. The key's position is
-- GRE's business, so a checksum word before it (C bit: checksum and
-- reserved1, 4 bytes) needs no special care here: GRE already skipped it.
-- The VSID/FlowID items point at the key's own bytes (FieldInfo.range), so
-- they highlight inside the GRE header.
--
-- Where the items show: a dissector called through a dissector table gets the
-- packet's top-level tree, not GRE's subtree, so "Network Virtualization
-- using GRE" is its own layer right below GRE (like VXLAN below UDP) with
-- VSID and FlowID inside it, followed by the inner Ethernet II layer.
--
-- GRE 0x6558 without a key (e.g. a Linux gretap without `key`) is not NVGRE:
-- no nvgre item is added and the payload goes straight to Ethernet.
-- RFC 7637 violations (C or S set, version not 0, reserved flag bits) are
-- flagged with an expert warning, not hidden.

local nvgre = Proto("nvgre", "Network Virtualization using GRE")

local f_vsid = ProtoField.uint32("nvgre.vsid", "Virtual Subnet ID (VSID)", base.DEC, nil, nil,
  "24-bit Virtual Subnet ID: the upper 24 bits of the GRE key (RFC 7637)")
local f_flowid = ProtoField.uint8("nvgre.flowid", "FlowID", base.DEC, nil, nil,
  "8-bit per-flow entropy: the low 8 bits of the GRE key (RFC 7637)")
nvgre.fields = { f_vsid, f_flowid }

local ef_flags = ProtoExpert.new("nvgre.gre_flags", "GRE header breaks RFC 7637 (C and S must be 0, K 1, version 0)",
  expert.group.PROTOCOL, expert.severity.WARN)
-- RFC 7637 reserves VSIDs 0..0xFFF and 0xFFFFFF; nvgred accepts 4096..16777214.
local ef_vsid = ProtoExpert.new("nvgre.vsid.reserved", "Reserved VSID (RFC 7637 reserves 0..0xFFF and 0xFFFFFF)",
  expert.group.PROTOCOL, expert.severity.NOTE)
nvgre.experts = { ef_flags, ef_vsid }

nvgre.prefs.inner_fcs = Pref.bool("Inner frames may carry an FCS", false,
  "Hand the inner frame to eth_maybefcs (which follows the Ethernet \"Assume packets have FCS\" preference) " ..
  "instead of eth_withoutfcs. NVGRE inner frames normally have no FCS.")

-- Field extractors must be created at load time, outside the dissector.
local fx_key = Field.new("gre.key")
local fx_flags = Field.new("gre.flags_and_version")

local GRE_R, GRE_K, GRE_S = 0x4000, 0x2000, 0x1000 -- flag bits (RFC 1701/2784/2890)
local TEB = 0x6558

local gre_table = DissectorTable.get("gre.proto")
-- The handle that had 0x6558 before us (eth_withoutfcs in 4.0): a fallback.
local previous = gre_table:get_dissector(TEB)
local eth_withoutfcs = Dissector.get("eth_withoutfcs") or previous
local eth_maybefcs = Dissector.get("eth_maybefcs") or eth_withoutfcs

-- The FieldInfo of field extractor `fx` with the largest frame offset below
-- `limit`, i.e. the innermost occurrence before our payload; nil if none.
local function last_before(fx, limit)
  local best
  for _, fi in ipairs({ fx() }) do
    if fi.offset < limit and (best == nil or fi.offset > best.offset) then best = fi end
  end
  return best
end

local function inner_ethernet()
  return nvgre.prefs.inner_fcs and eth_maybefcs or eth_withoutfcs
end

function nvgre.dissector(tvb, pinfo, tree)
  local payload_at = tvb:offset() -- offset of our payload in the frame
  local key_fi = last_before(fx_key, payload_at)
  local flags_fi = key_fi and last_before(fx_flags, key_fi.offset)
  local flags = flags_fi and flags_fi.value or 0
  local gap = key_fi and (payload_at - key_fi.offset) or 0
  local expected_gap = 4 + (bit.band(flags, GRE_S) ~= 0 and 4 or 0)

  if key_fi and flags_fi and bit.band(flags, GRE_R) == 0 and gap == expected_gap then
    local key = key_fi.value
    local vsid = bit.rshift(key, 8)
    local flowid = bit.band(key, 0xff)
    local key_range = key_fi.range -- the 4 key bytes inside the GRE header

    local item = tree:add(nvgre, key_range)
    item:append_text(string.format(", VSID: %d, FlowID: %d", vsid, flowid))
    item:add(f_vsid, key_range:range(0, 3))
    item:add(f_flowid, key_range:range(3, 1))
    if bit.band(flags, 0xffff) ~= GRE_K then
      item:add_proto_expert_info(ef_flags, string.format(
        "GRE flags and version 0x%04x: RFC 7637 requires 0x2000 (K only, version 0)", flags))
    end
    if vsid < 0x1000 or vsid == 0xffffff then item:add_proto_expert_info(ef_vsid) end

    inner_ethernet():call(tvb, pinfo, tree)
    -- After the inner dissectors, which rewrite the Info column.
    pinfo.cols.info:append(string.format(" [NVGRE VSID %d FlowID %d]", vsid, flowid))
  else
    -- No usable key: plain Transparent Ethernet Bridging, not NVGRE.
    inner_ethernet():call(tvb, pinfo, tree)
  end
  return tvb:len()
end

gre_table:add(TEB, nvgre)
