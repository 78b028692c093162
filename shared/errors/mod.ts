/**
 * Tessera's error type and SQLSTATE codes.
 *
 * @module
 */
export {
  isSeverity,
  isSqlState,
  type Severity,
  TesseraError,
  type TesseraErrorOptions,
} from "./tessera_error.ts";
export { SqlState, type SqlStateCode } from "./sqlstate.ts";
