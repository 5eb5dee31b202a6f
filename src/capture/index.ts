// Packet capture for `nvgrectl capture`: the pcap file writer, the capture
// filters, and the libpcap capture loop.

export {
  DEFAULT_SNAPLEN,
  LINKTYPE,
  PCAP_GLOBAL_HEADER_BYTES,
  PCAP_MAGIC,
  PCAP_RECORD_HEADER_BYTES,
  PcapWriter,
  linkTypeOf,
  nowMicros,
  pcapGlobalHeader,
  type PcapStream,
  type PcapWriterOptions,
} from './pcap.js';
export { GRE_FILTER, VSID_MAX, adapterFilter, underlayFilter, type UnderlayFilterOptions } from './filter.js';
export { CaptureError, runCapture, type CaptureErrorKind, type CaptureOptions, type CaptureResult, type StopReason } from './capture.js';
