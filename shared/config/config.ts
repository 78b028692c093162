/**
 * Configuration from command-line flags with environment-variable fallbacks, validated by a
 * zod schema. Invalid configuration fails at start with the field's flag and the reason.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { z } from "zod";
import { SqlState, TesseraError } from "../errors/mod.ts";

/** How one configuration field is given on the command line and in the environment. */
export interface FieldSpec {
  /** Flag name without dashes, e.g. `data-dir`. */
  flag: string;
  /** Environment variable consulted when the flag is absent, e.g. `PGCTLD_DATA_DIR`. */
  env?: string;
  /** `boolean` flags take no value; `string` flags take one (numbers are coerced by the schema). */
  type?: "string" | "boolean";
  /** Whether the flag may repeat (env fallback then splits on commas). */
  multiple?: boolean;
  /** One line for `--help`. */
  description: string;
}

/** A component's configuration: its zod schema and how each field is given. */
export interface ConfigSpec<S extends z.ZodObject> {
  /** Program name for usage text, e.g. `pgctld`. */
  program: string;
  /** Schema of the resulting configuration object; defaults live here. */
  schema: S;
  /** One entry per schema field. */
  fields: { [K in keyof z.infer<S>]-?: FieldSpec };
}

/** Raised for an invalid flag, environment variable or value. Its SQLSTATE is F0000. */
export class ConfigError extends TesseraError {
  /** Creates a configuration error. */
  constructor(message: string) {
    super(SqlState.configFileError, message);
    this.name = "ConfigError";
  }
}

/** Result of {@linkcode loadConfig}: the configuration, or a request for help text. */
export type LoadResult<T> = { help: false; config: T; positionals: string[] } | {
  help: true;
  usage: string;
};

function envValue(spec: FieldSpec, env: Record<string, string | undefined>): unknown {
  if (spec.env === undefined) return undefined;
  const raw = env[spec.env];
  if (raw === undefined || raw === "") return undefined;
  if (spec.type === "boolean") {
    const v = raw.toLowerCase();
    if (["1", "true", "yes", "on"].includes(v)) return true;
    if (["0", "false", "no", "off"].includes(v)) return false;
    throw new ConfigError(`${spec.env} must be a boolean (true or false): received '${raw}'`);
  }
  if (spec.multiple) return raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  return raw;
}

/** Usage text listing every flag, its environment variable and its description. */
export function usage<S extends z.ZodObject>(spec: ConfigSpec<S>): string {
  const lines = [`usage: ${spec.program} [flags]`, "", "flags:"];
  for (const field of Object.values(spec.fields) as FieldSpec[]) {
    const left = `  --${field.flag}${field.type === "boolean" ? "" : " VALUE"}`;
    const env = field.env ? ` (env ${field.env})` : "";
    lines.push(`${left.padEnd(32)} ${field.description}${env}`);
  }
  lines.push(`  ${"--help".padEnd(30)} show this text`);
  return lines.join("\n");
}

/**
 * Reads configuration from `args` (flags) and `env` (fallbacks), validates it with the spec's
 * schema and returns it. Throws {@linkcode ConfigError} naming the flag and the reason.
 */
export function loadConfig<S extends z.ZodObject>(
  spec: ConfigSpec<S>,
  args: string[],
  env: Record<string, string | undefined> = Deno.env.toObject(),
  options: { allowPositionals?: boolean } = {},
): LoadResult<z.infer<S>> {
  const fields = spec.fields as Record<string, FieldSpec>;
  const parseOptions: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {
    help: { type: "boolean" },
  };
  for (const field of Object.values(fields)) {
    parseOptions[field.flag] = { type: field.type ?? "string", multiple: field.multiple ?? false };
  }
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: parseOptions,
      strict: true,
      allowPositionals: options.allowPositionals ?? false,
    });
  } catch (err) {
    throw new ConfigError(`${spec.program}: ${(err as Error).message}`);
  }
  if (parsed.values.help === true) return { help: true, usage: usage(spec) };

  const raw: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(fields)) {
    const fromFlag = (parsed.values as Record<string, unknown>)[field.flag];
    const value = fromFlag !== undefined ? fromFlag : envValue(field, env);
    if (value !== undefined) raw[key] = value;
  }
  const result = spec.schema.safeParse(raw);
  if (!result.success) {
    const reasons = result.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? "");
      const field = fields[key];
      const name = field ? `--${field.flag}${field.env ? ` (${field.env})` : ""}` : key;
      const received = key in raw ? `: received '${String(raw[key])}'` : "";
      return `${name}: ${issue.message}${received}`;
    });
    throw new ConfigError(`${spec.program}: invalid configuration: ${reasons.join("; ")}`);
  }
  return { help: false, config: result.data, positionals: parsed.positionals };
}

/** A TCP port number (1–65535) given as a string or number. */
export const portSchema: z.ZodCoercedNumber<unknown> = z.coerce.number().int().min(1).max(65535);

/** A positive integer given as a string or number. */
export const positiveIntSchema: z.ZodCoercedNumber<unknown> = z.coerce.number().int().positive();

/** A `HOST:PORT` address (IPv6 hosts in brackets). */
export const hostPortSchema: z.ZodString = z.string().regex(
  /^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/,
  "must be HOST:PORT",
);

/** An absolute file-system path. */
export const absolutePathSchema: z.ZodString = z.string().refine(
  (p) => p.startsWith("/"),
  "must be an absolute path",
);

/** A whole number of at least 0, given as a string or number. */
export const nonNegativeIntSchema: z.ZodCoercedNumber<unknown> = z.coerce.number().int().min(0);

/** Splits `HOST:PORT` (IPv6 in brackets) into its parts. */
export function splitHostPort(value: string): { hostname: string; port: number } {
  const idx = value.lastIndexOf(":");
  const host = value.slice(0, idx);
  return {
    hostname: host.startsWith("[") ? host.slice(1, -1) : host,
    port: Number(value.slice(idx + 1)),
  };
}
