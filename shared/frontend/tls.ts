/**
 * Server-side TLS for a connection that began in plaintext (Postgres's SSLRequest): the
 * certificate and key, loaded once at start, and the upgrade of an accepted `Deno.Conn` to a
 * TLS connection with the same `Deno.Conn` shape.
 *
 * ## Why node:tls over a Duplex
 *
 * `Deno.startTls` is client-side only and `Deno.listenTls` only accepts connections that are
 * TLS from their first byte, while a Postgres client first sends an 8-byte SSLRequest in
 * plaintext. Two ways were built and measured on the 2-core dev machine (pgbench `select 1`
 * against the front end's fixture server, server-process CPU per transaction; the machine was
 * shared, so ranges):
 *
 * | path | CPU per transaction, 10-50 clients | connection setup (pgbench -C) |
 * |---|---|---|
 * | plaintext | 9-13 µs | 0.2 ms, 0.24 ms CPU |
 * | node:tls `TLSSocket({ isServer: true })` over a Duplex around the Deno.Conn (chosen) | 20-28 µs | 1.6-2.4 ms, 1.7-2.3 ms CPU (RSA-2048; ECDSA P-256: 1.0-1.3 ms) |
 * | relay into an in-process loopback `Deno.listenTls` terminator | 28-38 µs | 19 ms |
 *
 * The loopback terminator needs two extra sockets and two relay loops per client (four more
 * awaited operations per round trip), and its accepted `TlsConn` offers no `setNoDelay`, so
 * every handshake stalls ~20 ms on Nagle and delayed ACKs. node:tls keeps one socket: Deno runs
 * it as a JS stream socket feeding its Rust (rustls) TLS wrap, with the same one send and one
 * receive system call per round trip as plaintext; the extra cost (~14 µs per transaction) is
 * stream machinery and a Buffer copy per received chunk.
 *
 * Memory per idle logged-in client (fixture server, 3000 clients, after GC): plaintext 17 KB
 * RSS (6 KB JS heap), TLS 54 KB RSS (17 KB JS heap, the rest mostly rustls's buffers). The
 * ciphertext read buffer that waits on an idle client is 2 KiB and grows only while reads fill
 * it (large records, COPY).
 *
 * TCP_NODELAY must be on for the raw socket (`acceptFrontend` sets it): Deno's accepted
 * sockets have Nagle on, and the handshake's several small writes then stall 40 ms on delayed
 * ACKs.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { Duplex } from "node:stream";
import { createSecureContext, type SecureContext, TLSSocket } from "node:tls";

/** Where the server's TLS certificate (chain) and private key are, as PEM files. */
export interface FrontendTls {
  /** PEM file with the server certificate, optionally followed by intermediates. */
  certFile: string;
  /** PEM file with the certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC). */
  keyFile: string;
}

/** A {@linkcode FrontendTls} whose files have been read and checked once. */
export interface LoadedFrontendTls extends FrontendTls {
  /** Marks the object as loaded. */
  readonly loaded: true;
  /** The certificate's subject, e.g. `CN=db.example.com`. */
  readonly subject: string;
  /** The certificate's subjectAltName, e.g. `DNS:db.example.com, IP Address:10.0.0.1`. */
  readonly subjectAltName: string | undefined;
  /** End of the certificate's validity period. */
  readonly notAfter: Date;
  /** The TLS configuration built from the files. */
  readonly secureContext: SecureContext;
  /**
   * Channel binding data of type `tls-server-end-point` (RFC 5929): the hash of the certificate,
   * for SCRAM-SHA-256-PLUS. Undefined when its signature algorithm names no hash (RSASSA-PSS,
   * EdDSA): then channel binding is not offered.
   */
  readonly endPoint: Uint8Array | undefined;
}

/**
 * Hashes of certificate signature algorithms, by the algorithm's OID (DER content bytes, hex).
 * RFC 5929: MD5 and SHA-1 are replaced by SHA-256.
 */
const SIGNATURE_HASHES: Record<string, string> = {
  "2a864886f70d010104": "sha256", // md5WithRSAEncryption
  "2a864886f70d010105": "sha256", // sha1WithRSAEncryption
  "2a864886f70d01010e": "sha224", // sha224WithRSAEncryption
  "2a864886f70d01010b": "sha256", // sha256WithRSAEncryption
  "2a864886f70d01010c": "sha384", // sha384WithRSAEncryption
  "2a864886f70d01010d": "sha512", // sha512WithRSAEncryption
  "2a8648ce3d0401": "sha256", // ecdsa-with-SHA1
  "2a8648ce3d040301": "sha224", // ecdsa-with-SHA224
  "2a8648ce3d040302": "sha256", // ecdsa-with-SHA256
  "2a8648ce3d040303": "sha384", // ecdsa-with-SHA384
  "2a8648ce3d040304": "sha512", // ecdsa-with-SHA512
};

/** A DER element at `at`: where its content starts and ends. Throws on a truncated one. */
function derElement(der: Uint8Array, at: number): { tag: number; start: number; end: number } {
  const tag = der[at]!;
  let len = der[at + 1]!;
  let start = at + 2;
  if (len >= 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error("unsupported DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i]!;
    start += n;
  }
  if (start + len > der.length) throw new Error("truncated DER element");
  return { tag, start, end: start + len };
}

/**
 * The `tls-server-end-point` channel binding data of a DER certificate: its hash with the hash
 * function of its signature algorithm (SHA-256 for MD5 and SHA-1), or undefined when that
 * algorithm names none.
 */
export function tlsServerEndPoint(der: Uint8Array): Uint8Array | undefined {
  try {
    const cert = derElement(der, 0); // Certificate ::= SEQUENCE {
    const tbs = derElement(der, cert.start); //   tbsCertificate,
    const alg = derElement(der, tbs.end); //   signatureAlgorithm SEQUENCE { algorithm OID, ... }
    const oid = derElement(der, alg.start);
    if (cert.tag !== 0x30 || alg.tag !== 0x30 || oid.tag !== 0x06) return undefined;
    const hex = Array.from(der.subarray(oid.start, oid.end), (b) => b.toString(16).padStart(2, "0"))
      .join("");
    const hash = SIGNATURE_HASHES[hex];
    return hash === undefined ? undefined : new Uint8Array(createHash(hash).update(der).digest());
  } catch {
    return undefined;
  }
}

function readPem(path: string, what: string): string {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`TLS ${what} file '${path}' cannot be read: ${reason}`, { cause: err });
  }
  return text;
}

/**
 * Reads and checks the certificate and key files once, at start. Throws an Error naming the
 * file and the problem when a file is missing or unreadable, is not PEM, does not parse, or
 * when the key does not belong to the certificate.
 *
 * @example
 * ```ts
 * const tls = loadFrontendTls({ certFile: "server.crt", keyFile: "server.key" });
 * const result = await acceptFrontend(conn, { auth, tls });
 * ```
 */
export function loadFrontendTls(config: FrontendTls): LoadedFrontendTls {
  if (isLoaded(config)) return config;
  const cert = readPem(config.certFile, "certificate");
  const key = readPem(config.keyFile, "key");
  if (!cert.includes("-----BEGIN CERTIFICATE-----")) {
    throw new Error(
      `TLS certificate file '${config.certFile}' holds no PEM certificate ` +
        "(expected a '-----BEGIN CERTIFICATE-----' block)",
    );
  }
  if (!/-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/.test(key)) {
    throw new Error(
      `TLS key file '${config.keyFile}' holds no PEM private key ` +
        "(expected a '-----BEGIN PRIVATE KEY-----' block)",
    );
  }
  if (key.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
    throw new Error(`TLS key file '${config.keyFile}' is encrypted: a passphrase is not supported`);
  }
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new Error(
      `TLS certificate file '${config.certFile}' cannot be parsed: ${(err as Error).message}`,
      { cause: err },
    );
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new Error(
      `TLS key file '${config.keyFile}' cannot be parsed: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new Error(
      `TLS key file '${config.keyFile}' does not match the certificate in '${config.certFile}'`,
    );
  }
  return {
    certFile: config.certFile,
    keyFile: config.keyFile,
    loaded: true,
    subject: x509.subject,
    subjectAltName: x509.subjectAltName,
    notAfter: new Date(x509.validTo),
    secureContext: createSecureContext({ cert, key }),
    endPoint: tlsServerEndPoint(new Uint8Array(x509.raw)),
  };
}

function isLoaded(config: FrontendTls): config is LoadedFrontendTls {
  return (config as Partial<LoadedFrontendTls>).loaded === true;
}

// ---- Deno.Conn → Duplex (the ciphertext side) ----

// The read buffer an idle TLS client waits on; grows while reads fill it (large records,
// COPY) and goes back to this size after a short read.
const SMALL_READ = 2048;
const LARGE_READ = 32768;

/** A Duplex over a Deno.Conn, read with a reused buffer: what TLSSocket reads ciphertext from. */
function connDuplex(conn: Deno.Conn): Duplex {
  let buf = new Uint8Array(SMALL_READ);
  return new Duplex({
    // Only as much ciphertext as one large TLS record is read ahead of the TLS layer.
    readableHighWaterMark: LARGE_READ,
    read() {
      conn.read(buf).then(
        (n) => {
          if (n === null) {
            this.push(null);
            return;
          }
          // A copy: `buf` is read into again at once.
          this.push(Buffer.from(buf.subarray(0, n)));
          if (n === buf.byteLength && buf.byteLength < LARGE_READ) {
            buf = new Uint8Array(Math.min(buf.byteLength * 4, LARGE_READ));
          } else if (n <= SMALL_READ && buf.byteLength > SMALL_READ) {
            buf = new Uint8Array(SMALL_READ);
          }
        },
        (err) => this.destroy(err),
      );
    },
    write(chunk: Uint8Array, _encoding, callback) {
      writeFully(conn, chunk).then(() => callback(), callback);
    },
    final(callback) {
      conn.closeWrite().then(() => callback(), () => callback());
    },
    destroy(err, callback) {
      try {
        conn.close();
      } catch {
        // already closed
      }
      callback(err);
    },
  });
}

async function writeFully(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    done += await conn.write(done === 0 ? bytes : bytes.subarray(done));
  }
}

// ---- TLSSocket → Deno.Conn (the plaintext side) ----

// Above this many decrypted bytes waiting for the reader, the TLS socket is paused.
const PAUSE_AT = 65536;

/**
 * A TLS connection with the shape of a `Deno.Conn`, made by {@linkcode upgradeToTls}: reads
 * and writes plaintext, and `close()` closes the underlying connection too.
 */
export class TlsServerConn implements Deno.Conn {
  #socket: TLSSocket;
  #raw: Deno.Conn;
  #queue: Uint8Array[] = [];
  #queueOffset = 0;
  #queued = 0;
  #ended = false;
  #rawEnded = false;
  #error: Error | null = null;
  #closed = false;
  #wake: (() => void) | null = null;
  #readable: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
  #writable: WritableStream<Uint8Array<ArrayBufferLike>> | undefined;

  /**
   * Wraps a TLSSocket whose handshake has completed over `raw` (read and written through
   * `ciphertext`).
   */
  constructor(socket: TLSSocket, raw: Deno.Conn, ciphertext: Duplex) {
    this.#socket = socket;
    this.#raw = raw;
    // A client that goes away without a TLS close_notify ends only the ciphertext side.
    const gone = (): void => {
      this.#rawEnded = true;
      this.#notify();
    };
    ciphertext.on("end", gone);
    ciphertext.on("close", gone);
    socket.on("data", (chunk: Uint8Array) => {
      this.#queue.push(chunk);
      this.#queued += chunk.byteLength;
      if (this.#queued > PAUSE_AT) socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (err: Error) => {
      this.#error ??= err;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** The local address of the underlying connection. */
  get localAddr(): Deno.Addr {
    return this.#raw.localAddr;
  }

  /** The remote address of the underlying connection. */
  get remoteAddr(): Deno.Addr {
    return this.#raw.remoteAddr;
  }

  /** Reads decrypted bytes into `p`; `null` once the client has closed the connection. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#queue.length === 0) {
      if (this.#closed) throw new Deno.errors.BadResource("connection is closed");
      if (this.#error !== null) throw this.#error;
      if (this.#ended) return null;
      if (this.#socket.isPaused()) this.#socket.resume();
      // The client went away without close_notify: done once nothing decrypted is left.
      if (this.#rawEnded && this.#socket.readableLength === 0) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    if (p.byteLength === 0) return 0;
    const chunk = this.#queue[0]!;
    const n = Math.min(p.byteLength, chunk.byteLength - this.#queueOffset);
    p.set(chunk.subarray(this.#queueOffset, this.#queueOffset + n));
    this.#queueOffset += n;
    this.#queued -= n;
    if (this.#queueOffset === chunk.byteLength) {
      this.#queue.shift();
      this.#queueOffset = 0;
    }
    if (this.#queued < PAUSE_AT / 4 && this.#socket.isPaused()) this.#socket.resume();
    return n;
  }

  /**
   * Encrypts and sends all of `p`; resolves (to `p.byteLength`) once the ciphertext has been
   * written to the underlying connection, so `p` may be reused afterwards.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("connection is closed"));
    if (this.#error !== null) return Promise.reject(this.#error);
    if (p.byteLength === 0) return Promise.resolve(0);
    return new Promise((resolve, reject) => {
      this.#socket.write(p, (err) => err ? reject(err) : resolve(p.byteLength));
    });
  }

  /** Sends TLS close_notify and shuts down the write side of the underlying connection. */
  closeWrite(): Promise<void> {
    if (this.#closed || this.#socket.destroyed) {
      return Promise.reject(new Deno.errors.BadResource("connection is closed"));
    }
    return new Promise((resolve) => {
      const done = (): void => {
        this.#socket.off("close", done);
        resolve();
      };
      this.#socket.once("close", done);
      this.#socket.end(done);
    });
  }

  /** Closes the TLS session and the underlying connection; a second call does nothing. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.destroy();
    this.#notify();
  }

  /** Keeps the event loop alive while the connection is open (the default). */
  ref(): void {
    this.#raw.ref();
  }

  /** Lets the event loop end while the connection is open. */
  unref(): void {
    this.#raw.unref();
  }

  /** Sets TCP_NODELAY on the underlying connection when it is TCP. */
  setNoDelay(noDelay = true): void {
    (this.#raw as Partial<Deno.TcpConn>).setNoDelay?.(noDelay);
  }

  /** Sets SO_KEEPALIVE on the underlying connection when it is TCP. */
  setKeepAlive(keepAlive = true): void {
    (this.#raw as Partial<Deno.TcpConn>).setKeepAlive?.(keepAlive);
  }

  /** Decrypted bytes as a stream (slower than `read`; for code that wants streams). */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    this.#readable ??= new ReadableStream<Uint8Array<ArrayBuffer>>({
      pull: async (controller) => {
        const buf = new Uint8Array(16384);
        const n = await this.read(buf);
        if (n === null) {
          controller.close();
        } else {
          controller.enqueue(buf.subarray(0, n));
        }
      },
      cancel: () => this.close(),
    });
    return this.#readable;
  }

  /** A stream whose chunks are encrypted and sent. */
  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    this.#writable ??= new WritableStream<Uint8Array<ArrayBufferLike>>({
      write: async (chunk) => {
        await this.write(chunk);
      },
      close: () => this.closeWrite(),
      abort: () => this.close(),
    });
    return this.#writable;
  }

  /** Closes the connection. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Runs the server side of a TLS handshake on `conn` (after the `S` answer to an SSLRequest)
 * and resolves to a `Deno.Conn`-shaped connection carrying the decrypted stream. Rejects, with
 * `conn` closed, when the handshake fails, when the client closes the connection first, or
 * when `signal` aborts (a startup timeout).
 */
export function upgradeToTls(
  conn: Deno.Conn,
  tls: LoadedFrontendTls,
  signal?: AbortSignal,
): Promise<TlsServerConn> {
  const duplex = connDuplex(conn);
  // Errors surface through the TLS socket; a listener must exist so that an 'error' is never
  // thrown as uncaught.
  duplex.on("error", () => {});
  const socket = new TLSSocket(duplex as never, {
    isServer: true,
    secureContext: tls.secureContext,
  });
  return new Promise((resolve, reject) => {
    const fail = (err?: unknown): void => {
      cleanup();
      socket.on("error", () => {});
      socket.destroy();
      duplex.destroy();
      reject(err instanceof Error ? err : new Error("connection closed during the TLS handshake"));
    };
    const onSecure = (): void => {
      cleanup();
      resolve(new TlsServerConn(socket, conn, duplex));
    };
    // The TLS socket reports nothing when the client hangs up part way through its hello:
    // watch the ciphertext side too.
    const onEnd = (): void => fail();
    const onAbort = (): void => fail(signal?.reason ?? new Error("TLS handshake aborted"));
    const cleanup = (): void => {
      socket.off("secure", onSecure);
      socket.off("error", fail);
      socket.off("close", onEnd);
      duplex.off("end", onEnd);
      duplex.off("close", onEnd);
      signal?.removeEventListener("abort", onAbort);
    };
    if (signal?.aborted) {
      fail(signal.reason);
      return;
    }
    socket.once("secure", onSecure);
    socket.once("error", fail);
    socket.once("close", onEnd);
    duplex.once("end", onEnd);
    duplex.once("close", onEnd);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
