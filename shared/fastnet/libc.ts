/**
 * The libc calls the fast network path makes through Deno's FFI (Linux, glibc or musl, x86_64 or
 * aarch64): non-blocking sockets, epoll and eventfd. Opened once per process, on first use.
 *
 * @module
 */

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // ssize_t results read as i32 (the low half of the return register): counts stay far below
  // 2^31 (one call moves at most one buffer) and -1 stays -1, and no BigInt is made per call.
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  /** The same call on a worker thread, for waits that may block. */
  epoll_wait_blocking: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  setsid: { parameters: [], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
} as const;

const CACHED_LENGTHS = 32 * 1024 + 1;
const SMALL_LENGTHS: (bigint | undefined)[] = new Array(CACHED_LENGTHS);

/**
 * `n` as the BigInt a `usize` parameter takes; lengths up to 32 KiB come from a cache, so a
 * call per read or write makes no BigInt.
 */
export function usize(n: number): bigint {
  if (n >= CACHED_LENGTHS) return BigInt(n);
  return SMALL_LENGTHS[n] ??= BigInt(n);
}

/** The opened library's functions. */
export type LibcSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Constants of Linux's socket and epoll API used here. */
export const C = {
  AF_UNIX: 1,
  AF_INET: 2,
  AF_INET6: 10,
  SOCK_STREAM: 1,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SO_REUSEADDR: 2,
  SO_ERROR: 4,
  SO_KEEPALIVE: 9,
  IPPROTO_TCP: 6,
  IPPROTO_IPV6: 41,
  IPV6_V6ONLY: 26,
  TCP_NODELAY: 1,
  SHUT_WR: 1,
  MSG_NOSIGNAL: 0x4000,
  MSG_DONTWAIT: 0x40,
  MSG_CMSG_CLOEXEC: 0x40000000,
  SCM_RIGHTS: 1,
  EPOLL_CLOEXEC: 0o2000000,
  EPOLL_CTL_ADD: 1,
  EPOLL_CTL_DEL: 2,
  EPOLL_CTL_MOD: 3,
  EPOLLIN: 0x1,
  EPOLLOUT: 0x4,
  EPOLLERR: 0x8,
  EPOLLHUP: 0x10,
  EPOLLRDHUP: 0x2000,
  EPOLLET: 0x80000000,
  EFD_NONBLOCK: 0o4000,
  EFD_CLOEXEC: 0o2000000,
} as const;

/** errno values acted on. */
export const E = {
  ENOENT: 2,
  EINTR: 4,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EMFILE: 24,
  EPIPE: 32,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETUNREACH: 101,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
  EINPROGRESS: 115,
} as const;

const NAMES: Record<number, string> = {
  [E.ENOENT]: "No such file or directory",
  [E.EBADF]: "Bad file descriptor",
  [E.EACCES]: "Permission denied",
  [E.EMFILE]: "Too many open files",
  [E.EPIPE]: "Broken pipe",
  [E.EADDRINUSE]: "Address already in use",
  [E.EADDRNOTAVAIL]: "Cannot assign requested address",
  [E.ENETUNREACH]: "Network is unreachable",
  [E.ECONNABORTED]: "Software caused connection abort",
  [E.ECONNRESET]: "Connection reset by peer",
  [E.ENOTCONN]: "Transport endpoint is not connected",
  [E.ETIMEDOUT]: "Connection timed out",
  [E.ECONNREFUSED]: "Connection refused",
  [E.EHOSTUNREACH]: "No route to host",
};

/**
 * The error Deno itself would raise for `errno` (so callers that test for
 * `Deno.errors.ConnectionRefused` and friends behave the same on both paths).
 */
export function errnoError(errno: number, doing: string): Error {
  const message = `${doing}: ${NAMES[errno] ?? "errno"} (os error ${errno})`;
  switch (errno) {
    case E.ECONNREFUSED:
      return new Deno.errors.ConnectionRefused(message);
    case E.ECONNRESET:
      return new Deno.errors.ConnectionReset(message);
    case E.ECONNABORTED:
      return new Deno.errors.ConnectionAborted(message);
    case E.EPIPE:
      return new Deno.errors.BrokenPipe(message);
    case E.ENOTCONN:
      return new Deno.errors.NotConnected(message);
    case E.ENOENT:
      return new Deno.errors.NotFound(message);
    case E.EACCES:
      return new Deno.errors.PermissionDenied(message);
    case E.EADDRINUSE:
      return new Deno.errors.AddrInUse(message);
    case E.EADDRNOTAVAIL:
      return new Deno.errors.AddrNotAvailable(message);
    case E.ETIMEDOUT:
      return new Deno.errors.TimedOut(message);
    case E.ENETUNREACH:
    case E.EHOSTUNREACH:
      return new Deno.errors.NetworkUnreachable(message);
    default:
      return new Error(message);
  }
}

/** A C `int` option value (for `setsockopt`), read only: 0 and 1 are shared buffers. */
export function int32(v: number): Uint8Array {
  if (v === 0) return INT32_ZERO;
  if (v === 1) return INT32_ONE;
  return new Uint8Array(new Int32Array([v]).buffer);
}
const INT32_ZERO = new Uint8Array(new Int32Array([0]).buffer);
const INT32_ONE = new Uint8Array(new Int32Array([1]).buffer);

/** The opened library with what the rest of the module needs around it. */
export interface Libc {
  /** The functions. */
  sym: LibcSymbols;
  /** The calling thread's errno right after a failed call. */
  errno(): number;
  /** Bytes per `struct epoll_event` on this architecture. */
  eventSize: number;
  /** Offset of `data` in `struct epoll_event`. */
  eventDataOffset: number;
}

let opened: Libc | undefined;
let failure: string | undefined;

/**
 * Opens libc, or returns why it cannot be used: not Linux, an unknown architecture, no FFI
 * permission, or no libc found. Tried once per process.
 */
export function openLibc(): Libc | string {
  if (opened !== undefined) return opened;
  if (failure !== undefined) return failure;
  try {
    if (Deno.build.os !== "linux") throw new Error(`not on Linux (${Deno.build.os})`);
    const arch = Deno.build.arch;
    if (arch !== "x86_64" && arch !== "aarch64") throw new Error(`unknown architecture ${arch}`);
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
      throw new Error("no FFI permission (--allow-ffi)");
    }
    let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
    let lastErr: unknown;
    for (
      const name of ["libc.so.6", "libc.so", "libc.musl-x86_64.so.1", "libc.musl-aarch64.so.1"]
    ) {
      try {
        lib = Deno.dlopen(name, SYMBOLS);
        break;
      } catch (err) {
        lastErr = err;
      }
    }
    if (lib === undefined) {
      throw new Error(`libc not found: ${lastErr instanceof Error ? lastErr.message : lastErr}`);
    }
    const sym = lib.symbols;
    const ptr = sym.__errno_location();
    if (ptr === null) throw new Error("__errno_location returned NULL");
    const view = new Deno.UnsafePointerView(ptr);
    opened = {
      sym,
      errno: () => view.getInt32(0),
      // x86_64 packs struct epoll_event (12 bytes); other architectures align data (16 bytes).
      eventSize: arch === "x86_64" ? 12 : 16,
      eventDataOffset: arch === "x86_64" ? 4 : 8,
    };
    return opened;
  } catch (err) {
    failure = err instanceof Error ? err.message : String(err);
    return failure;
  }
}
