/**
 * Type declarations for the part of `npm:etcd3@1.1.2` that Tessera uses, mirroring its own
 * `lib/*.d.ts`.
 *
 * Why not etcd3's own types: they pull `@types/node` 26 (through `@grpc/grpc-js` and protobufjs)
 * into every program that imports topo, which changes global types for all of it (`setTimeout`
 * returns `NodeJS.Timeout`, `node:assert` overloads change) and breaks code elsewhere in the
 * repository. Keep this file in step with the etcd3 version pinned in deno.json.
 *
 * @module
 */

/** A Node Buffer as etcd3 returns it: bytes that print as UTF-8. */
export interface EtcdBytes extends Uint8Array {
  toString(encoding?: "utf8" | "utf-8" | "hex" | "base64"): string;
  equals(other: Uint8Array): boolean;
}

/** gRPC call options; only the deadline is used. */
export interface CallOptions {
  deadline?: number | Date;
}

/** Context given to a `defaultCallOptions` factory. */
export interface CallContext {
  service: string;
  method: string;
  isStream: boolean;
}

/** A backoff as cockatiel defines it. */
export interface IBackoff {
  readonly duration: number;
  next(context?: unknown): IBackoff;
}

/** Options of the client. */
export interface IOptions {
  hosts: string[] | string;
  defaultCallOptions?: CallOptions | ((context: CallContext) => CallOptions);
  faultHandling?: {
    watchBackoff?: IBackoff;
    /** The policy guarding each host's calls (a cockatiel policy; a circuit breaker by default). */
    host?: (hostname: string) => object;
  };
  dialTimeout?: number;
}

export interface IResponseHeader {
  cluster_id: string;
  member_id: string;
  revision: string;
  raft_term: string;
}

export interface IKeyValue {
  key: EtcdBytes;
  create_revision: string;
  mod_revision: string;
  version: string;
  value: EtcdBytes;
  lease: string;
}

export interface IEvent {
  type: "Put" | "Delete";
  kv: IKeyValue;
  prev_kv?: IKeyValue;
}

export interface IWatchResponse {
  header: IResponseHeader;
  watch_id: string;
  created: boolean;
  canceled: boolean;
  compact_revision: string;
  cancel_reason: string;
  fragment: boolean;
  events: IEvent[];
}

export interface IRangeResponse {
  header: IResponseHeader;
  kvs: IKeyValue[];
  more: boolean;
  count: string;
}

export interface IPutResponse {
  header: IResponseHeader;
}

export interface IDeleteRangeResponse {
  header: IResponseHeader;
  deleted: string;
}

export interface ITxnResponse {
  header: IResponseHeader;
  succeeded: boolean;
}

export declare class SingleRangeBuilder {
  options(options: CallOptions | undefined): this;
  exec(): Promise<IRangeResponse>;
  string(): Promise<string | null>;
}

export declare class MultiRangeBuilder {
  prefix(value: string): this;
  options(options: CallOptions | undefined): this;
  exec(): Promise<IRangeResponse>;
}

export declare class PutBuilder {
  value(value: string | Uint8Array | number): this;
  lease(lease: number | string | Promise<string | number>): this;
  options(options: CallOptions | undefined): this;
  exec(): Promise<IPutResponse>;
  then<R>(onFulfilled: (value: IPutResponse) => R | PromiseLike<R>): Promise<R>;
}

export declare class DeleteBuilder {
  key(key: string): this;
  prefix(value: string): this;
  options(options: CallOptions | undefined): this;
  exec(): Promise<IDeleteRangeResponse>;
}

export declare class ComparatorBuilder {
  and(
    key: string,
    column: "Value" | "Version" | "Create" | "Mod" | "Lease",
    cmp: "==" | "===" | ">" | "<" | "!=" | "!==",
    value: string | number,
  ): this;
  then(...clauses: PutBuilder[]): this;
  options(options: CallOptions | undefined): this;
  commit(): Promise<ITxnResponse>;
}

export declare class WatchBuilder {
  key(key: string): this;
  prefix(value: string): this;
  startRevision(revision: string): this;
  /** Creates the watcher without waiting for it to connect. */
  watcher(): Watcher;
  create(): Promise<Watcher>;
}

/** Error emitted by watchers and leases. */
export declare class EtcdError extends Error {}

export declare class Watcher {
  on(event: "connecting", handler: (req: unknown) => void): this;
  on(event: "connected", handler: (res: IWatchResponse) => void): this;
  on(event: "data", handler: (res: IWatchResponse) => void): this;
  on(event: "put", handler: (kv: IKeyValue, previous?: IKeyValue) => void): this;
  on(event: "delete", handler: (kv: IKeyValue, previous?: IKeyValue) => void): this;
  on(event: "end", handler: () => void): this;
  on(event: "disconnected", handler: (err: EtcdError) => void): this;
  on(event: "error", handler: (err: EtcdError) => void): this;
  lastRevision(): number | null;
  cancel(): Promise<void>;
}

export interface ILeaseOptions extends CallOptions {
  autoKeepAlive?: boolean;
}

export declare class Lease {
  grant(): Promise<string>;
  revoke(options?: CallOptions): Promise<void>;
  release(): void;
  put(key: string): PutBuilder;
  revoked(): boolean;
  on(event: "lost", handler: (err: EtcdError) => void): this;
  on(
    event: "keepaliveSucceeded" | "keepaliveFired" | "keepaliveFailed" | "keepaliveEstablished",
    handler: () => void,
  ): this;
  once(event: "keepaliveSucceeded" | "keepaliveFailed", handler: () => void): this;
  off(event: "keepaliveSucceeded" | "keepaliveFailed", handler: () => void): this;
}

export declare class Lock {
  ttl(seconds: number): this;
  options(options: CallOptions): this;
  acquire(): Promise<this>;
  leaseId(): Promise<string | null>;
  release(): Promise<void>;
}

export declare class ElectionObserver {
  get hasLeader(): boolean;
  on(event: "change", handler: (value: string | undefined) => void): this;
  on(event: "error", handler: (value: Error) => void): this;
  cancel(): Promise<void>;
  leader(): string | undefined;
}

export declare class Campaign {
  on(event: "elected", handler: () => void): this;
  on(event: "error", handler: (error: Error) => void): this;
  resign(): Promise<void>;
}

export declare class Election {
  readonly name: string;
  campaign(value: string): Campaign;
  leader(): Promise<string | undefined>;
  observe(): Promise<ElectionObserver>;
}

export declare class Namespace {
  /** Low-level KV client; Tessera's tests use it to compact. */
  readonly kv: {
    compact(req: { revision: string | number; physical?: boolean }): Promise<unknown>;
  };
  /** Low-level lease client; Tessera's tests use it to revoke a lease by id. */
  readonly leaseClient: { leaseRevoke(req: { ID: string }): Promise<unknown> };
  get(key: string): SingleRangeBuilder;
  getAll(): MultiRangeBuilder;
  put(key: string): PutBuilder;
  delete(): DeleteBuilder;
  lease(ttl: number, options?: ILeaseOptions): Lease;
  lock(key: string): Lock;
  if(
    key: string,
    column: "Value" | "Version" | "Create" | "Mod" | "Lease",
    cmp: "==" | "===" | ">" | "<" | "!=" | "!==",
    value: string | number,
  ): ComparatorBuilder;
  watch(): WatchBuilder;
  namespace(prefix: string): Namespace;
  election(name: string, ttl?: number): Election;
}

export declare class Etcd3 extends Namespace {
  constructor(options?: IOptions);
  close(): void;
}

export declare class ClientClosedError extends Error {}
export declare class GRPCUnavailableError extends Error {}
export declare class GRPCDeadlineExceededError extends Error {}
export declare class EtcdLockFailedError extends Error {}
export declare class EtcdLeaseInvalidError extends Error {}
export declare function isRecoverableError(error: Error): boolean;
