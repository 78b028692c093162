/**
 * Tessera's error type and SQLSTATE codes.
 *
 * @module
 */
export { TesseraError, type Severity, type TesseraErrorOptions } from "./tessera_error.ts";
export { SqlState, type SqlStateCode } from "./sqlstate.ts";
