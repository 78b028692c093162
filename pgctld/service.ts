/**
 * The Connect service of pgctld: each RPC maps onto one {@linkcode PostgresInstance} operation.
 *
 * @module
 */

import type { ConnectRouter } from "@connectrpc/connect";
import {
  AuthMethod,
  PgctldService,
  type Status,
  StopMode,
} from "../proto/gen/tessera/pgctld/v1/pgctld_pb.ts";
import { create } from "@bufbuild/protobuf";
import { StatusSchema } from "../proto/gen/tessera/pgctld/v1/pgctld_pb.ts";
import { SqlState, TesseraError } from "../shared/errors/mod.ts";
import type {
  AuthMethod as InstanceAuth,
  InstanceStatus,
  PostgresInstance,
  StopMode as InstanceStopMode,
} from "./postgres/instance.ts";
import { validateReplicationSource } from "./postgres/conninfo.ts";

/** Version of pgctld reported by the Version RPC. */
export const PGCTLD_VERSION = "0.1.0";

function authMethod(value: AuthMethod): InstanceAuth | undefined {
  switch (value) {
    case AuthMethod.UNSPECIFIED:
      return undefined;
    case AuthMethod.TRUST:
      return "trust";
    case AuthMethod.SCRAM_SHA_256:
      return "scram-sha-256";
    case AuthMethod.LOCAL_TRUST_TCP_SCRAM:
      return "local-trust-tcp-scram";
  }
  throw new TesseraError(SqlState.invalidParameterValue, `unknown auth method ${value}`);
}

function stopMode(value: StopMode): InstanceStopMode {
  switch (value) {
    case StopMode.UNSPECIFIED:
    case StopMode.FAST:
      return "fast";
    case StopMode.SMART:
      return "smart";
    case StopMode.IMMEDIATE:
      return "immediate";
  }
  throw new TesseraError(SqlState.invalidParameterValue, `unknown stop mode ${value}`);
}

function waitSeconds(value: number): number {
  if (value < 0 || value > 3600) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `wait_seconds must be between 0 and 3600: received ${value}`,
    );
  }
  return value;
}

function toStatus(s: InstanceStatus): Status {
  return create(StatusSchema, s);
}

/** Registers pgctld's service for `instance` on a Connect router. */
export function registerPgctldService(
  router: ConnectRouter,
  instance: PostgresInstance,
): void {
  router.service(PgctldService, {
    async initDataDir(req) {
      const res = await instance.init({
        auth: authMethod(req.authMethod),
        superuser: req.superuser,
        password: req.superuserPassword,
      });
      return res;
    },
    async start(req) {
      return { status: toStatus(await instance.start(req.settings, waitSeconds(req.waitSeconds))) };
    },
    async stop(req) {
      return {
        status: toStatus(await instance.stop(stopMode(req.mode), waitSeconds(req.waitSeconds))),
      };
    },
    async restart(req) {
      const status = await instance.restart(
        stopMode(req.mode),
        req.settings,
        waitSeconds(req.waitSeconds),
      );
      return { status: toStatus(status) };
    },
    async reloadConfig(req) {
      return await instance.reload(req.settings);
    },
    async status() {
      return { status: toStatus(await instance.status()) };
    },
    async initReplica(req) {
      const status = await instance.initReplica({
        source: validateReplicationSource(req),
        replaceExisting: req.replaceExisting,
        waitSeconds: waitSeconds(req.waitSeconds),
      });
      return { status: toStatus(status) };
    },
    async setReplicationSource(req) {
      return {
        status: toStatus(await instance.setReplicationSource(validateReplicationSource(req))),
      };
    },
    async rewind(req) {
      const status = await instance.rewind({
        source: validateReplicationSource(req),
        waitSeconds: waitSeconds(req.waitSeconds),
      });
      return { status: toStatus(status) };
    },
    async promote(req) {
      return { status: toStatus(await instance.promote(waitSeconds(req.waitSeconds))) };
    },
    async version() {
      return {
        pgctldVersion: PGCTLD_VERSION,
        postgresVersion: await instance.version(),
        bindir: instance.options.bindir,
      };
    },
  });
}
