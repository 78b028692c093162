/**
 * The one error class of Tessera: a Postgres-style error with SQLSTATE, severity, message,
 * detail and hint. Every error that reaches a client or an RPC caller is one of these.
 *
 * @module
 */

import { SqlState, type SqlStateCode } from "./sqlstate.ts";

/** Severity levels of a Postgres ErrorResponse or NoticeResponse. */
export type Severity =
  | "ERROR"
  | "FATAL"
  | "PANIC"
  | "WARNING"
  | "NOTICE"
  | "DEBUG"
  | "INFO"
  | "LOG";

/** Optional fields of a {@linkcode TesseraError}. */
export interface TesseraErrorOptions {
  /** Severity as Postgres names it; `ERROR` when not given. */
  severity?: Severity | undefined;
  /** Secondary message with more detail about the problem. */
  detail?: string | undefined;
  /** Advice on what to do about the problem. */
  hint?: string | undefined;
  /** The underlying error, if any. */
  cause?: unknown;
}

const SQLSTATE_PATTERN = /^[0-9A-Z]{5}$/;
const SEVERITIES: ReadonlySet<string> = new Set<Severity>([
  "ERROR",
  "FATAL",
  "PANIC",
  "WARNING",
  "NOTICE",
  "DEBUG",
  "INFO",
  "LOG",
]);

/** Whether `value` is a well-formed SQLSTATE: five digits or capital letters. */
export function isSqlState(value: string): boolean {
  return SQLSTATE_PATTERN.test(value);
}

/** Whether `value` is one of the severities Postgres sends. */
export function isSeverity(value: string): value is Severity {
  return SEVERITIES.has(value);
}

/**
 * A Postgres error with a real SQLSTATE.
 *
 * @example
 * ```ts
 * throw new TesseraError(SqlState.tooManyConnections, "pool is full: waited 5000 ms", {
 *   hint: "raise --pool-size or --queue-timeout",
 * });
 * ```
 */
export class TesseraError extends Error {
  /** The five-character SQLSTATE code. */
  readonly code: SqlStateCode;
  /** Severity as Postgres names it. */
  readonly severity: Severity;
  /** Secondary message, if any. */
  readonly detail: string | undefined;
  /** Advice for the user, if any. */
  readonly hint: string | undefined;

  /** Creates an error with `code` (a SQLSTATE) and `message`. */
  constructor(code: SqlStateCode, message: string, options: TesseraErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    if (!SQLSTATE_PATTERN.test(code)) {
      throw new RangeError(`SQLSTATE must be five digits or capital letters: received '${code}'`);
    }
    this.name = "TesseraError";
    this.code = code;
    this.severity = options.severity ?? "ERROR";
    this.detail = options.detail;
    this.hint = options.hint;
  }

  /** The SQLSTATE class: its first two characters. */
  get sqlClass(): string {
    return this.code.slice(0, 2);
  }

  /** Plain-object form for structured logs and JSON APIs. */
  toJSON(): Record<string, string> {
    const out: Record<string, string> = {
      severity: this.severity,
      code: this.code,
      message: this.message,
    };
    if (this.detail !== undefined) out.detail = this.detail;
    if (this.hint !== undefined) out.hint = this.hint;
    return out;
  }

  /**
   * Returns `err` when it is already a TesseraError, else wraps it as `XX000` internal error
   * (or `code` when given), keeping the original as `cause`.
   */
  static from(err: unknown, code: SqlStateCode = SqlState.internalError): TesseraError {
    if (err instanceof TesseraError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new TesseraError(code, message, { cause: err });
  }
}
