/**
 * The fast network path: TCP and Unix stream sockets driven by one epoll set through libc
 * (Deno's FFI), with the shapes of `Deno.Conn` and `Deno.Listener`. Each read or write is one
 * system call made on the JavaScript thread, without Deno's per-operation cost (an async op,
 * its promise bookkeeping and a wake-up of the runtime's I/O driver), which is most of a
 * relay's CPU on this path (see `bench/RESULTS.md`).
 *
 * Linux only, and only with `--allow-ffi`; {@linkcode openFastNet} says why when it cannot be
 * used, and callers then use Deno's own networking. Host names other than IP literals and
 * `localhost` are left to Deno's networking too ({@linkcode FastNet.accepts}).
 *
 * @example
 * ```ts
 * const net = openFastNet();
 * if (typeof net !== "string") {
 *   const listener = net.listen({ hostname: "127.0.0.1", port: 16000 });
 *   for await (const conn of listener) handle(conn);
 * }
 * ```
 *
 * @module
 */

export { FastConn } from "./conn.ts";
export { FdReceiver, FdSender, type SendResult } from "./fdpass.ts";
export { type FastAddress, FastListener, FastNet, openFastNet } from "./net.ts";
