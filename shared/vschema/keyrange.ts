/**
 * Key ranges and keyspace ids. A keyspace id is 8 bytes; a shard owns the ids in
 * `[start, end)`, compared as unsigned byte strings, with an empty bound meaning unbounded.
 * Names are Vitess-style: `-80`, `80-`, `40-80`, `-` (everything), `0` (the one shard of an
 * unsharded keyspace, which is also everything).
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";

/** A parsed key range; an empty `start`/`end` is unbounded on that side. */
export interface KeyRange {
  /** Inclusive lower bound (bytes). */
  start: Uint8Array;
  /** Exclusive upper bound (bytes); empty means no upper bound. */
  end: Uint8Array;
}

const HEX = /^(?:[0-9a-f]{2})*$/;

function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Lower-case hex of `bytes`. */
export function bytesToHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Compares byte strings as unsigned, lexicographically (a prefix sorts first). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/**
 * Parses a Vitess-style range name. Throws a TesseraError `22023` quoting the name when it is
 * malformed or its start is not below its end.
 */
export function parseKeyRange(name: string): KeyRange {
  if (name === "0" || name === "-") return { start: new Uint8Array(), end: new Uint8Array() };
  const parts = name.split("-");
  const [s = "", e = ""] = parts;
  if (parts.length !== 2 || !HEX.test(s) || !HEX.test(e)) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `key range must look like '-80', '80-', '40-80', '-' or '0': received '${name}'`,
    );
  }
  const kr = { start: hexToBytes(s), end: hexToBytes(e) };
  if (kr.end.length > 0 && compareBytes(padRight(kr.start), padRight(kr.end)) >= 0) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `key range start must be below its end: received '${name}'`,
    );
  }
  return kr;
}

function padRight(b: Uint8Array): Uint8Array {
  if (b.length >= 8) return b;
  const out = new Uint8Array(8);
  out.set(b);
  return out;
}

/** The Vitess-style name of `kr` (`-` for the full range). */
export function formatKeyRange(kr: KeyRange): string {
  return `${bytesToHex(kr.start)}-${bytesToHex(kr.end)}`;
}

/** Whether `kr` holds `keyspaceId` (`start <= id < end`, unbounded sides always hold). */
export function keyRangeContains(kr: KeyRange, keyspaceId: Uint8Array): boolean {
  if (kr.start.length > 0 && compareBytes(keyspaceId, kr.start) < 0) return false;
  if (kr.end.length > 0 && compareBytes(keyspaceId, kr.end) >= 0) return false;
  return true;
}

/**
 * Splits the keyspace-id space into `n` contiguous ranges of (nearly) equal size, named
 * Vitess-style. Powers of two give the Vitess names (`n = 4`: `-40`, `40-80`, `80-c0`, `c0-`);
 * other counts use boundaries `floor(i * 256^b / n)` written with `b` bytes, where `b` is the
 * fewest bytes that give `n` distinct boundaries (one byte up to 256 shards). `n = 1` gives `-`.
 */
export function evenShards(n: number): string[] {
  if (!Number.isInteger(n) || n < 1 || n > 65536) {
    throw new RangeError(`'n' must be an integer from 1 to 65536: received ${n}`);
  }
  if (n === 1) return ["-"];
  const bytes = n <= 256 ? 1 : 2;
  const space = 256n ** BigInt(bytes);
  const bounds: string[] = [""];
  for (let i = 1; i < n; i++) {
    const v = (BigInt(i) * space) / BigInt(n);
    bounds.push(v.toString(16).padStart(bytes * 2, "0"));
  }
  bounds.push("");
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(`${bounds[i]}-${bounds[i + 1]}`);
  return out;
}

/**
 * The shard among `shards` (range names) that owns `keyspaceId`, or `undefined` when none does
 * (a gap in the ranges).
 */
export function shardForKeyspaceId(
  shards: readonly string[],
  keyspaceId: Uint8Array,
): string | undefined {
  for (const s of shards) {
    if (keyRangeContains(parseKeyRange(s), keyspaceId)) return s;
  }
  return undefined;
}
