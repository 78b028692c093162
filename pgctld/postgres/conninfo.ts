/**
 * libpq connection strings and password files for streaming replication: the `primary_conninfo`
 * pgctld writes into `tessera.conf`, and the `.pgpass` file the replica's walreceiver and
 * `pg_basebackup` read the replication password from.
 *
 * @module
 */

import { SqlState, TesseraError } from "../../shared/errors/mod.ts";

/** Where a replica streams from. */
export interface ReplicationSource {
  /** Host name or address of the primary. */
  host: string;
  /** Port of the primary. */
  port: number;
  /** application_name the replica reports to the primary; empty for none. */
  applicationName: string;
}

/** Port used when a request gives none. */
export const DEFAULT_PRIMARY_PORT = 5432;

const HOST_PATTERN = /^[A-Za-z0-9._:%\-\[\]]+$/;
const APPLICATION_NAME_PATTERN = /^[A-Za-z0-9_.\-]{1,63}$/;

/**
 * Checks a replication source from a request and fills the default port. Throws 22023 naming
 * the offending field.
 */
export function validateReplicationSource(
  source: { primaryHost: string; primaryPort: number; applicationName: string },
): ReplicationSource {
  const host = source.primaryHost.trim();
  if (host === "") {
    throw new TesseraError(SqlState.invalidParameterValue, "primary_host is required");
  }
  if (!HOST_PATTERN.test(host) || host.length > 255) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `primary_host must be a host name or address: received '${host}'`,
    );
  }
  const port = source.primaryPort === 0 ? DEFAULT_PRIMARY_PORT : source.primaryPort;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `primary_port must be between 1 and 65535: received ${source.primaryPort}`,
    );
  }
  const applicationName = source.applicationName;
  if (applicationName !== "" && !APPLICATION_NAME_PATTERN.test(applicationName)) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `application_name must be 1 to 63 letters, digits, '_', '.' or '-': received '${applicationName}'`,
    );
  }
  return { host, port, applicationName };
}

function quoteConninfoValue(value: string): string {
  return `'${value.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
}

/** Renders libpq `keyword=value` pairs, quoting every value; empty values are left out. */
export function renderConninfo(params: Record<string, string>): string {
  return Object.entries(params).filter(([, v]) => v !== "").map(([k, v]) =>
    `${k}=${quoteConninfoValue(v)}`
  ).join(" ");
}

/** Parses a libpq `keyword=value` connection string (quoted or bare values). */
export function parseConninfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  const skipSpace = () => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  while (true) {
    skipSpace();
    if (i >= text.length) break;
    let key = "";
    while (i < text.length && text[i] !== "=" && !/\s/.test(text[i]!)) key += text[i++];
    skipSpace();
    if (text[i] !== "=") break;
    i++;
    skipSpace();
    let value = "";
    if (text[i] === "'") {
      i++;
      while (i < text.length && text[i] !== "'") {
        if (text[i] === "\\" && i + 1 < text.length) i++;
        value += text[i++];
      }
      i++;
    } else {
      while (i < text.length && !/\s/.test(text[i]!)) {
        if (text[i] === "\\" && i + 1 < text.length) i++;
        value += text[i++];
      }
    }
    out[key] = value;
  }
  return out;
}

/** The replication source named by a `primary_conninfo`; undefined when it names no host. */
export function sourceFromConninfo(conninfo: string | undefined): ReplicationSource | undefined {
  if (conninfo === undefined || conninfo === "") return undefined;
  const params = parseConninfo(conninfo);
  if (params.host === undefined || params.host === "") return undefined;
  const port = Number(params.port ?? DEFAULT_PRIMARY_PORT);
  return {
    host: params.host,
    port: Number.isInteger(port) ? port : 0,
    applicationName: params.application_name ?? "",
  };
}

/** The `primary_conninfo` for `source`, streaming as `user` with the password from `passfile`. */
export function primaryConninfo(
  source: ReplicationSource,
  user: string,
  passfile: string | undefined,
): string {
  return renderConninfo({
    host: source.host,
    port: String(source.port),
    user,
    passfile: passfile ?? "",
    application_name: source.applicationName,
  });
}

function escapePgpassField(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll(":", "\\:");
}

/**
 * A `.pgpass` line giving `user`'s password for any host, port and database (`replication`
 * included), so a replica keeps authenticating after it is pointed at another primary.
 */
export function renderPgpass(user: string, password: string): string {
  return `*:*:*:${escapePgpassField(user)}:${escapePgpassField(password)}\n`;
}
