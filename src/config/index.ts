// The config layer: parse, validate and normalize nvgred's policy document
// (shared/spec/config.md). The same validators serve API bodies.

export { parseConfigText, parseConfigDocument, locate, MAX_ALIAS_COUNT, type ParsedConfigText } from './yaml.js';
export {
  validatePolicy,
  checkPolicy,
  sortFieldErrors,
  validateHost,
  validateProviderAddress,
  validateProviderRoute,
  validateCustomerRoute,
  validateLookupRecord,
  validateVmAdapter,
  validateRecord,
  validateEncapsulation,
  validateLearning,
  validateApi,
  validateMetrics,
  validateStateDir,
  validatePolicyStore,
  TOP_LEVEL_KEYS,
  VM_NAME_MAX,
  UNIX_SOCKET_PATH_MAX,
  type RecordValidator,
  type ValidateOptions,
} from './validate.js';
export { checkPolicyInvariants, collectInvariantErrors, type PolicyRecords, type InvariantOptions } from './invariants.js';
export {
  loadConfigFile,
  readConfigFile,
  JSON_ONLY_ABOVE_CHARS,
  loadConfigText,
  decodeUtf8,
  firstInvalidUtf8,
  DEFAULT_CONFIG_PATH,
  DEFAULT_MAX_CONFIG_BYTES,
  type LoadOptions,
  type LoadedConfig,
} from './load.js';
export {
  parseIp,
  parsePrefix,
  parseMac,
  parseRoutingDomain,
  parseHostPort,
  defaultGatewayOf,
  familyOf,
  interfaceNameProblem,
  netnsNameProblem,
  ZERO_MAC,
  type Family,
  type IpAddr,
  type IpPrefix,
} from './net.js';
export { joinKey, joinIndex, parsePath, type PathSegment } from './path.js';
