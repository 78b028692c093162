/**
 * `struct sockaddr` encoding and decoding for IPv4, IPv6 and Unix addresses.
 *
 * @module
 */

import { C } from "./libc.ts";

/** An encoded socket address and its length. */
export interface SockAddr {
  /** The bytes of the `struct sockaddr_*`. */
  bytes: Uint8Array<ArrayBuffer>;
  /** Address family (AF_INET, AF_INET6, AF_UNIX). */
  family: number;
}

function ipv4(host: string): number[] | undefined {
  const parts = host.split(".");
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    out.push(v);
  }
  return out;
}

function ipv6(host: string): number[] | undefined {
  if (!host.includes(":") || !/^[0-9a-fA-F:.]+$/.test(host)) return undefined;
  const halves = host.split("::");
  if (halves.length > 2) return undefined;
  const groups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      if (i === items.length - 1 && item.includes(".")) {
        const v4 = ipv4(item);
        if (v4 === undefined) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return undefined;
        out.push(parseInt(item, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 2 ? fill : 0).fill(0), ...tail];
  const bytes: number[] = [];
  for (const g of all) bytes.push(g >> 8, g & 0xff);
  return bytes;
}

/**
 * Encodes `hostname:port` when the host is an IP literal or `localhost`; undefined for other
 * names (the caller then uses Deno's own networking, which resolves names).
 */
export function inetAddr(hostname: string, port: number): SockAddr | undefined {
  const host = hostname.startsWith("[") && hostname.endsWith("]")
    ? hostname.slice(1, -1)
    : hostname;
  const v4 = host === "localhost" ? [127, 0, 0, 1] : ipv4(host);
  if (v4 !== undefined) {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, C.AF_INET, true);
    view.setUint16(2, port, false);
    bytes.set(v4, 4);
    return { bytes, family: C.AF_INET };
  }
  const v6 = ipv6(host);
  if (v6 === undefined) return undefined;
  const bytes = new Uint8Array(28);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, C.AF_INET6, true);
  view.setUint16(2, port, false);
  bytes.set(v6, 8);
  return { bytes, family: C.AF_INET6 };
}

/** Encodes a Unix socket path (at most 107 bytes). */
export function unixAddr(path: string): SockAddr {
  const encoded = new TextEncoder().encode(path);
  if (encoded.length > 107) {
    throw new RangeError(`Unix socket path is too long (${encoded.length} bytes): '${path}'`);
  }
  const bytes = new Uint8Array(110);
  new DataView(bytes.buffer).setUint16(0, C.AF_UNIX, true);
  bytes.set(encoded, 2);
  return { bytes, family: C.AF_UNIX };
}

function formatIpv6(b: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  // Compress the longest run of zero groups, as inet_ntop does.
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/** Decodes a `struct sockaddr` filled by the kernel into a `Deno.Addr`. */
export function decodeAddr(bytes: Uint8Array, length: number): Deno.Addr {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const family = view.getUint16(0, true);
  if (family === C.AF_INET) {
    return {
      transport: "tcp",
      hostname: Array.from(bytes.subarray(4, 8)).join("."),
      port: view.getUint16(2, false),
    };
  }
  if (family === C.AF_INET6) {
    return {
      transport: "tcp",
      hostname: formatIpv6(bytes.subarray(8, 24)),
      port: view.getUint16(2, false),
    };
  }
  const raw = bytes.subarray(2, Math.max(2, length));
  const end = raw.indexOf(0);
  return {
    transport: "unix",
    path: new TextDecoder().decode(end < 0 ? raw : raw.subarray(0, end)),
  };
}
