/**
 * Structured JSON-lines logging shared by every component.
 *
 * @module
 */
export {
  isLogLevel,
  type LogFields,
  Logger,
  type LoggerOptions,
  type LogLevel,
  type LogSink,
  stderrSink,
} from "./logger.ts";
