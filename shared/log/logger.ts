/**
 * Structured logging: one JSON object per line, with the component and alias on every line.
 *
 * @module
 */

/** Log levels in increasing order of importance. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Fields attached to a log line. Values must be JSON-serialisable; Errors are expanded. */
export type LogFields = Record<string, unknown>;

/** Where log lines go: receives each complete line without its trailing newline. */
export type LogSink = (line: string) => void;

const encoder = new TextEncoder();

/** Writes each line to standard error, which keeps stdout free for a program's own output. */
export const stderrSink: LogSink = (line) => {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
};

/** Options of {@linkcode Logger}. */
export interface LoggerOptions {
  /** Component name, e.g. `pgctld`. */
  component: string;
  /** Alias of this process instance, e.g. `zone1-0000000100`. */
  alias?: string;
  /** Lowest level that is written; `info` when not given. */
  level?: LogLevel;
  /** Destination of lines; standard error when not given. */
  sink?: LogSink;
  /** Fields added to every line. */
  fields?: LogFields;
}

function expand(value: unknown): unknown {
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message };
    for (const key of ["code", "detail", "hint"]) {
      const v = (value as unknown as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = v;
    }
    if (value.cause !== undefined) out.cause = expand(value.cause);
    return out;
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

/**
 * A structured logger. Child loggers add fields and keep the parent's sink and level.
 *
 * @example
 * ```ts
 * const log = new Logger({ component: "pgctld", alias: "pg0" });
 * log.info("postgres started", { pid: 1234, port: 25432 });
 * // {"ts":"…","level":"info","component":"pgctld","alias":"pg0","msg":"postgres started","pid":1234,"port":25432}
 * ```
 */
export class Logger {
  #component: string;
  #alias: string | undefined;
  #minRank: number;
  #sink: LogSink;
  #fields: LogFields;

  /** Creates a logger for `options.component`. */
  constructor(options: LoggerOptions) {
    this.#component = options.component;
    this.#alias = options.alias;
    this.#minRank = LEVEL_RANK[options.level ?? "info"];
    this.#sink = options.sink ?? stderrSink;
    this.#fields = options.fields ?? {};
  }

  /** A logger that adds `fields` to every line it writes. */
  child(fields: LogFields): Logger {
    const child = new Logger({ component: this.#component, sink: this.#sink });
    child.#alias = this.#alias;
    child.#minRank = this.#minRank;
    child.#fields = { ...this.#fields, ...fields };
    return child;
  }

  /** Whether lines of `level` are written. */
  enabled(level: LogLevel): boolean {
    return LEVEL_RANK[level] >= this.#minRank;
  }

  /** Writes a line at `level`. */
  log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (!this.enabled(level)) return;
    const line: Record<string, unknown> = {
      ts: new Date().toISOString(),
      level,
      component: this.#component,
    };
    if (this.#alias !== undefined) line.alias = this.#alias;
    line.msg = msg;
    for (const [k, v] of Object.entries(this.#fields)) line[k] = expand(v);
    if (fields) { for (const [k, v] of Object.entries(fields)) line[k] = expand(v); }
    let text: string;
    try {
      text = JSON.stringify(line);
    } catch (err) {
      text = JSON.stringify({
        ts: line.ts,
        level,
        component: this.#component,
        alias: this.#alias,
        msg,
        logError: `fields could not be serialised: ${String(err)}`,
      });
    }
    this.#sink(text);
  }

  /** Writes a debug line. */
  debug(msg: string, fields?: LogFields): void {
    this.log("debug", msg, fields);
  }
  /** Writes an info line. */
  info(msg: string, fields?: LogFields): void {
    this.log("info", msg, fields);
  }
  /** Writes a warning line. */
  warn(msg: string, fields?: LogFields): void {
    this.log("warn", msg, fields);
  }
  /** Writes an error line. */
  error(msg: string, fields?: LogFields): void {
    this.log("error", msg, fields);
  }
}

/** Parses a level name, as given in a flag or environment variable. */
export function isLogLevel(value: string): value is LogLevel {
  return value in LEVEL_RANK;
}
