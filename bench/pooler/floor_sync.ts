/**
 * The same minimal transaction pooler as `floor.ts`, written the way a C server is: one epoll
 * loop that blocks on the JavaScript thread and calls plain functions for each ready socket, with
 * no promise, no async function and no Deno event loop anywhere on the path (Deno's runtime is
 * not used at all after startup). What it loses against PgBouncer is what V8 and Deno's FFI cost
 * per event by themselves; bench/pooler runs it as the `floor-sync` target.
 *
 * `deno task bench-floor-sync --listen HOST:PORT --postgres-socket-dir DIR --postgres-port N
 * --pool-size N [--user U] [--database D]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { inetAddr, unixAddr } from "../../shared/fastnet/addr.ts";
import { openLibc, usize } from "../../shared/fastnet/libc.ts";

const libc = openLibc();
if (typeof libc === "string") throw new Error(`libc is not available: ${libc}`);
const s = libc.sym;

const AF_UNIX = 1, AF_INET = 2, SOCK_STREAM = 1, SOCK_NONBLOCK = 0o4000;
const SOL_SOCKET = 1, SO_REUSEADDR = 2, IPPROTO_TCP = 6, TCP_NODELAY = 1;
const MSG_NOSIGNAL = 0x4000;
const EPOLLIN = 1, EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2;
const Z = 0x5a, IDLE = 0x49, QUERY = 0x51, SYNC = 0x53, TERMINATE = 0x58;

const one = new Uint8Array(new Int32Array([1]).buffer);
const ep = s.epoll_create1(0);
const ctl = new Uint8Array(12);
const ctlView = new DataView(ctl.buffer);
const handlers = new Map<number, () => void>();

function watch(fd: number, fn: () => void): void {
  ctlView.setUint32(0, EPOLLIN, true);
  ctlView.setUint32(4, fd, true);
  if (s.epoll_ctl(ep, EPOLL_CTL_ADD, fd, ctl) < 0) throw new Error("epoll_ctl failed");
  handlers.set(fd, fn);
}

function unwatch(fd: number): void {
  handlers.delete(fd);
  s.epoll_ctl(ep, EPOLL_CTL_DEL, fd, ctl);
  s.close(fd);
}

/** Sends all of `b` (spinning while the socket's buffer is full: fine for a floor). */
function sendAll(fd: number, b: Uint8Array): boolean {
  let off = 0;
  let spins = 0;
  while (off < b.length) {
    const part = off === 0 ? b : b.subarray(off);
    const n = s.send(fd, part, usize(part.length), MSG_NOSIGNAL);
    if (n < 0) {
      if (++spins > 1_000_000) return false; // the peer is gone (or stuck)
      continue;
    }
    off += n;
  }
  return true;
}

/** A growable input buffer with message framing. */
class Input {
  buf = new Uint8Array(16384);
  head = 0;
  tail = 0;

  /** Reads what the socket has; false at end of stream or on an error. */
  fill(fd: number): boolean {
    if (this.head === this.tail) this.head = this.tail = 0;
    else if (this.tail === this.buf.length) {
      if (this.head > 0) {
        this.buf.copyWithin(0, this.head, this.tail);
        this.tail -= this.head;
        this.head = 0;
      } else {
        const grown = new Uint8Array(this.buf.length * 2);
        grown.set(this.buf);
        this.buf = grown;
      }
    }
    const room = this.buf.subarray(this.tail);
    const n = s.recv(fd, room, usize(room.length), 0);
    if (n <= 0) return n < 0; // -1: EAGAIN (level-triggered: try later); 0: closed
    this.tail += n;
    return true;
  }

  /** Length of the complete message at `at`, or 0. */
  frame(at: number): number {
    if (this.tail - at < 5) return 0;
    const b = this.buf;
    const len = ((b[at + 1]! << 24) | (b[at + 2]! << 16) | (b[at + 3]! << 8) | b[at + 4]!) + 1;
    return this.tail - at >= len ? len : 0;
  }
}

interface Server {
  fd: number;
  client: Client | null;
  pending: number;
  input: Input;
}

interface Client {
  fd: number;
  server: Server | null;
  started: boolean;
  input: Input;
}

const idle: Server[] = [];
const waiting: Client[] = [];
let params = new Uint8Array(0);

function release(server: Server): void {
  server.client = null;
  const next = waiting.shift();
  if (next === undefined) {
    idle.push(server);
    return;
  }
  attach(next, server);
  forwardClient(next);
}

function attach(c: Client, server: Server): void {
  c.server = server;
  server.client = c;
}

function dropClient(c: Client): void {
  unwatch(c.fd);
  const at = waiting.indexOf(c);
  if (at >= 0) waiting.splice(at, 1);
  const server = c.server;
  if (server !== null) {
    c.server = null;
    server.client = null;
    unwatch(server.fd); // mid-transaction: its state is unknown
  }
}

/** Sends the client's complete messages to its server (taking one first). */
function forwardClient(c: Client): void {
  const inp = c.input;
  let at = inp.head;
  let ends = 0;
  for (;;) {
    const len = inp.frame(at);
    if (len === 0) break;
    const t = inp.buf[at]!;
    if (t === TERMINATE) {
      dropClient(c);
      return;
    }
    if (t === QUERY || t === SYNC) ends++;
    at += len;
  }
  if (at === inp.head) return;
  if (c.server === null) {
    const server = idle.pop();
    if (server === undefined) {
      if (!waiting.includes(c)) waiting.push(c);
      return;
    }
    attach(c, server);
  }
  const server = c.server!;
  server.pending += ends;
  sendAll(server.fd, inp.buf.subarray(inp.head, at));
  inp.head = at;
}

function onServer(server: Server): void {
  const inp = server.input;
  if (!inp.fill(server.fd)) {
    unwatch(server.fd);
    if (server.client !== null) dropClient(server.client);
    return;
  }
  let at = inp.head;
  let free = false;
  for (;;) {
    const len = inp.frame(at);
    if (len === 0) break;
    if (inp.buf[at] === Z && --server.pending <= 0) {
      server.pending = 0;
      free = inp.buf[at + 5] === IDLE;
    }
    at += len;
  }
  if (at === inp.head) return;
  const c = server.client;
  if (c !== null) sendAll(c.fd, inp.buf.subarray(inp.head, at));
  inp.head = at;
  if (free && c !== null) {
    c.server = null;
    release(server);
  }
}

function onClient(c: Client): void {
  const inp = c.input;
  if (!inp.fill(c.fd)) {
    dropClient(c);
    return;
  }
  if (!c.started) {
    for (;;) {
      if (inp.tail - inp.head < 8) return;
      const v = new DataView(inp.buf.buffer, inp.head);
      const len = v.getInt32(0);
      const code = v.getInt32(4);
      if (code === 80877103 || code === 80877104) {
        inp.head += 8;
        sendAll(c.fd, new Uint8Array([0x4e]));
        continue;
      }
      if (inp.tail - inp.head < len) return;
      inp.head += len;
      const ok = [0x52, 0, 0, 0, 8, 0, 0, 0, 0];
      const tail = [0x4b, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 1, Z, 0, 0, 0, 5, IDLE];
      const out = new Uint8Array(ok.length + params.length + tail.length);
      out.set(ok);
      out.set(params, ok.length);
      out.set(tail, ok.length + params.length);
      sendAll(c.fd, out);
      c.started = true;
      break;
    }
  }
  if (c.server === null && waiting.includes(c)) return;
  forwardClient(c);
}

/** Connects one server and logs it in, spinning while it waits (startup only). */
function connectServer(path: string, user: string, database: string, keep: boolean): Server {
  const fd = s.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  const sa = unixAddr(path);
  if (s.connect(fd, sa.bytes, sa.bytes.length) < 0) throw new Error(`cannot connect to ${path}`);
  const body = new TextEncoder().encode(`user\0${user}\0database\0${database}\0\0`);
  const msg = new Uint8Array(8 + body.length);
  new DataView(msg.buffer).setInt32(0, msg.length);
  new DataView(msg.buffer).setInt32(4, 196608);
  msg.set(body, 8);
  sendAll(fd, msg);
  const inp = new Input();
  const kept: number[] = [];
  for (;;) {
    if (!inp.fill(fd)) throw new Error("Postgres closed the login");
    for (;;) {
      const len = inp.frame(inp.head);
      if (len === 0) break;
      const t = inp.buf[inp.head]!;
      if (t === 0x45) throw new Error("Postgres refused the login");
      if (t === 0x53 && keep) kept.push(...inp.buf.subarray(inp.head, inp.head + len));
      inp.head += len;
      if (t === Z) {
        if (keep) params = new Uint8Array(kept);
        const server: Server = { fd, client: null, pending: 0, input: inp };
        watch(fd, () => onServer(server));
        return server;
      }
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      listen: { type: "string", default: "127.0.0.1:12797" },
      "postgres-socket-dir": { type: "string" },
      "postgres-port": { type: "string", default: "5432" },
      "pool-size": { type: "string", default: "20" },
      user: { type: "string", default: "postgres" },
      database: { type: "string", default: "postgres" },
    },
  });
  const dir = values["postgres-socket-dir"];
  if (dir === undefined) throw new RangeError("'--postgres-socket-dir' is required");
  const path = `${dir}/.s.PGSQL.${values["postgres-port"]}`;
  const size = Number(values["pool-size"]);
  for (let i = 0; i < size; i++) {
    idle.push(connectServer(path, values.user!, values.database!, i === 0));
  }
  const at = values.listen!.lastIndexOf(":");
  const sa = inetAddr(values.listen!.slice(0, at), Number(values.listen!.slice(at + 1)));
  if (sa === undefined || sa.family !== AF_INET) throw new RangeError("'--listen' must be IPv4");
  const lfd = s.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  s.setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, one, 4);
  if (s.bind(lfd, sa.bytes, sa.bytes.length) < 0 || s.listen(lfd, 1024) < 0) {
    throw new Error(`cannot listen on ${values.listen}`);
  }
  watch(lfd, () => {
    for (;;) {
      const fd = s.accept4(lfd, null, null, SOCK_NONBLOCK);
      if (fd < 0) return;
      s.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
      const c: Client = { fd, server: null, started: false, input: new Input() };
      watch(fd, () => onClient(c));
    }
  });
  console.log(`floor-sync pooler listening on ${values.listen}, ${size} Postgres connections`);
  const events = new Uint8Array(12 * 256);
  const view = new DataView(events.buffer);
  for (;;) {
    const n = s.epoll_wait(ep, events, 256, -1);
    for (let i = 0; i < n; i++) handlers.get(view.getUint32(i * 12 + 4, true))?.();
  }
}
