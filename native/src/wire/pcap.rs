//! A minimal libpcap (not pcapng) writer for tests and packet traces.
//!
//! Everything is written little-endian; readers tell the byte order from the
//! magic number, so the files open the same everywhere (tcpdump, Wireshark).

use std::io::{self, Write};
use std::time::Duration;

/// Microsecond-resolution classic pcap.
const MAGIC: u32 = 0xa1b2_c3d4;
const VERSION_MAJOR: u16 = 2;
const VERSION_MINOR: u16 = 4;
/// Longest packet stored in full; longer ones are cut (`orig_len` keeps the
/// real length). tcpdump's default.
pub const SNAPLEN: u32 = 262_144;

const GLOBAL_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

/// The LINKTYPE_* value telling readers how each packet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LinkType {
    /// An Ethernet header.
    Ethernet = 1,
    /// An IPv4 or IPv6 header, told apart by the version nibble.
    Raw = 101,
}

/// Writes a pcap stream to `W`; wrap files in a `BufWriter`, since each
/// packet is two `write_all` calls.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    writer: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(mut writer: W, link_type: LinkType) -> io::Result<PcapWriter<W>> {
        let mut header = [0u8; GLOBAL_HEADER_LEN];
        header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        header[4..6].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        header[6..8].copy_from_slice(&VERSION_MINOR.to_le_bytes());
        // 8..16: thiszone and sigfigs, both 0 (timestamps are UTC).
        header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        header[20..24].copy_from_slice(&(link_type as u32).to_le_bytes());
        writer.write_all(&header)?;
        Ok(PcapWriter { writer })
    }

    /// Appends one packet; `ts` is the time since the Unix epoch. Packets
    /// longer than [`SNAPLEN`] are cut.
    pub fn write_packet(&mut self, ts: Duration, data: &[u8]) -> io::Result<()> {
        let orig_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let incl_len = orig_len.min(SNAPLEN);
        // Seconds are 32-bit in this format: they wrap in 2106.
        let fields = [ts.as_secs() as u32, ts.subsec_micros(), incl_len, orig_len];
        let mut header = [0u8; RECORD_HEADER_LEN];
        for (slot, value) in header.chunks_exact_mut(4).zip(fields) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        self.writer.write_all(&header)?;
        self.writer.write_all(&data[..incl_len as usize])
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    #[inline]
    pub fn into_inner(self) -> W {
        self.writer
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn global_header() {
        let out = PcapWriter::new(Vec::new(), LinkType::Ethernet)
            .unwrap()
            .into_inner();
        assert_eq!(
            out,
            [
                0xd4, 0xc3, 0xb2, 0xa1, 0x02, 0x00, 0x04, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //
                0x00, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00,
            ]
        );
        let raw = PcapWriter::new(Vec::new(), LinkType::Raw)
            .unwrap()
            .into_inner();
        assert_eq!(raw[20..], [101, 0, 0, 0]);
    }

    #[test]
    fn records() {
        let mut pcap = PcapWriter::new(Vec::new(), LinkType::Raw).unwrap();
        pcap.write_packet(Duration::new(1_700_000_000, 123_456_789), &[0x45, 0, 0, 20])
            .unwrap();
        pcap.flush().unwrap();
        let out = pcap.into_inner();
        let record = &out[GLOBAL_HEADER_LEN..];
        assert_eq!(&record[0..4], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&record[4..8], &123_456u32.to_le_bytes());
        assert_eq!(&record[8..16], &[4, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(&record[16..], &[0x45, 0, 0, 20]);
    }

    #[test]
    fn long_packets_are_cut() {
        let mut pcap = PcapWriter::new(Vec::new(), LinkType::Ethernet).unwrap();
        let big = vec![0u8; SNAPLEN as usize + 10];
        pcap.write_packet(Duration::ZERO, &big).unwrap();
        let out = pcap.into_inner();
        let record = &out[GLOBAL_HEADER_LEN..];
        assert_eq!(&record[8..12], &SNAPLEN.to_le_bytes());
        assert_eq!(&record[12..16], &(SNAPLEN + 10).to_le_bytes());
        assert_eq!(record.len(), RECORD_HEADER_LEN + SNAPLEN as usize);
    }
}
