/**
 * Reusable pieces of Tessera's benchmark drivers: a pgbench runner with its output and latency
 * log parsers, a PgBouncer launcher, RSS and descriptor probes, an idle-connection opener,
 * plain-text tables, and writers that record acknowledged commits for failover measurements.
 *
 * @module
 */

export {
  CpuMeter,
  type CpuShare,
  cpuShare,
  loadAverage,
  parseContextSwitches,
  parseProcessTicks,
  parseSystemTicks,
  type ProcessTicks,
  type ProcessUsage,
  readProcessUsage,
  readTreeUsage,
  type SystemTicks,
  treeTicks,
  type UsagePerTransaction,
  usagePerTransaction,
} from "./cpu.ts";
export {
  type IdleClientsHandle,
  type IdleClientsOptions,
  type IdleClientsReport,
  openIdleConnections,
  parseIdleClientArgs,
  startIdleClients,
} from "./idle_clients.ts";
export {
  LatencyCollector,
  type LatencySummary,
  percentile,
  summariseLatencyLogs,
} from "./latency_log.ts";
export {
  checkLogin,
  connectAndLogin,
  encodeStartupMessage,
  handshake,
  type HandshakeResult,
  type LoginOptions,
  parseErrorFields,
  splitBackendMessages,
} from "./pg_startup.ts";
export {
  findPgbench,
  parsePgbenchOutput,
  pgbenchArgs,
  type PgbenchProtocol,
  type PgbenchReport,
  type PgbenchResult,
  type PgbenchRunOptions,
  type PgbenchWorkload,
  runPgbench,
} from "./pgbench.ts";
export {
  findPgbouncer,
  type PgbouncerConfig,
  type PgbouncerProcess,
  renderPgbouncerConfig,
  startPgbouncer,
  type StartPgbouncerOptions,
} from "./pgbouncer.ts";
export {
  assertPortFree,
  CleanupStack,
  ensureNofile,
  findBinary,
  type FindBinaryOptions,
  type NofileLimits,
  parseNofileLimits,
  readNofileLimits,
  sleep,
  stopChild,
} from "./process.ts";
export {
  argvHas,
  childPids,
  countOpenFds,
  findServerPid,
  type IdleRssOptions,
  type IdleRssResult,
  measureIdleRss,
  parseStatusKb,
  readCommandLine,
  readExe,
  readRssKb,
} from "./rss.ts";
export { fixed, formatMarkdownTable, formatTable, ratio, type Table } from "./table.ts";
export {
  type Ack,
  firstAckSentAfter,
  longestAckGap,
  missingIds,
  Writers,
  type WritersOptions,
} from "./writers.ts";
