/**
 * The functional vindexes: `identity` and `hash`.
 *
 * - `identity`: the integer key's 8-byte big-endian two's-complement value (so `1` is
 *   `0000000000000001`, `-1` is `ffffffffffffffff`).
 * - `hash` with `key: integer` (default): splitmix64 of the key as an unsigned 64-bit integer
 *   (negatives as two's complement), written big-endian:
 *   `z = x + 0x9e3779b97f4a7c15; z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
 *   z = (z ^ (z >> 27)) * 0x94d049bb133111eb; z = z ^ (z >> 31)`, all modulo 2^64. It is a
 *   bijection, so distinct keys never collide.
 * - `hash` with `key: text`: the first 8 bytes of SHA-256 of the value's UTF-8 bytes, exactly as
 *   given (no case folding or trimming).
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { VindexType } from "../../../shared/vschema/mod.ts";
import {
  integerKey,
  uint64Bytes,
  type Vindex,
  type VindexMapping,
  type VindexValue,
} from "./vindex.ts";

const M64 = (1n << 64n) - 1n;

/** splitmix64 of `x` (see the module doc), as an unsigned 64-bit bigint. */
export function splitmix64(x: bigint): bigint {
  let z = (BigInt.asUintN(64, x) + 0x9e3779b97f4a7c15n) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/** The `hash` keyspace id of an integer key. */
export function hashInteger(n: bigint): Uint8Array {
  return uint64Bytes(splitmix64(n));
}

/** The `hash` keyspace id of a text key: SHA-256 of its UTF-8 bytes, first 8 bytes. */
export function hashText(s: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(s, "utf8").digest().subarray(0, 8));
}

function scalar(v: VindexValue | readonly VindexValue[]): VindexValue {
  return Array.isArray(v) ? (v.length === 1 ? v[0] as VindexValue : null) : v as VindexValue;
}

/** The `identity` vindex. */
export class IdentityVindex implements Vindex {
  /** Its name in the vschema. */
  readonly name: string;
  /** Always `identity`. */
  readonly type: VindexType = "identity";
  /** Unique. */
  readonly unique = true;
  /** Cheapest. */
  readonly cost = 0;
  /** Functional. */
  readonly needsLookup = false;
  /** Creates the vindex `name`. */
  constructor(name: string) {
    this.name = name;
  }
  /** Each integer's 8-byte big-endian value; anything else maps to none. */
  map(values: readonly (VindexValue | readonly VindexValue[])[]): VindexMapping[] {
    return values.map((v) => {
      const n = integerKey(v);
      return n === undefined ? { kind: "none" } : { kind: "id", id: uint64Bytes(n) };
    });
  }
}

/** The `hash` vindex, for integer or text keys. */
export class HashVindex implements Vindex {
  /** Its name in the vschema. */
  readonly name: string;
  /** Always `hash`. */
  readonly type: VindexType = "hash";
  /** Unique. */
  readonly unique = true;
  /** Cheap. */
  readonly cost = 1;
  /** Functional. */
  readonly needsLookup = false;
  /** `integer` or `text`. */
  readonly key: "integer" | "text";
  /** Creates the vindex `name` for keys of kind `key`. */
  constructor(name: string, key: "integer" | "text" = "integer") {
    this.name = name;
    this.key = key;
  }
  /** Each value's hash; NULL (and non-integers for an integer key) map to none. */
  map(values: readonly (VindexValue | readonly VindexValue[])[]): VindexMapping[] {
    return values.map((v): VindexMapping => {
      if (this.key === "integer") {
        const n = integerKey(v);
        return n === undefined ? { kind: "none" } : { kind: "id", id: hashInteger(n) };
      }
      const s = scalar(v);
      if (s === null) return { kind: "none" };
      return { kind: "id", id: hashText(String(s)) };
    });
  }
}
