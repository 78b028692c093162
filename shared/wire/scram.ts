/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as Postgres uses it, on WebCrypto: the client side (to
 * log in to Postgres), the server side (to verify clients against a stored verifier), and
 * verifiers in Postgres's format `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
 *
 * Channel binding is not supported: the client sends the GS2 header `n,,` and the server
 * rejects `p=`. As in Postgres, the user name inside SCRAM is ignored (the startup packet's
 * `user` counts) and passwords are normalized with SASLprep where that succeeds.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";

/** The SASL mechanism name. */
export const SCRAM_SHA_256 = "SCRAM-SHA-256";

/** The SASL mechanism with channel binding (`tls-server-end-point`, over TLS). */
export const SCRAM_SHA_256_PLUS = "SCRAM-SHA-256-PLUS";

/** The channel binding type Postgres and Tessera use (RFC 5929). */
export const TLS_SERVER_END_POINT = "tls-server-end-point";

/** Iteration count of new verifiers, as Postgres's default (`scram_iterations`). */
export const DEFAULT_SCRAM_ITERATIONS = 4096;

/** Salt length of new verifiers, in bytes, as Postgres. */
export const SCRAM_SALT_LENGTH = 16;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---- base64 and byte helpers ----

/** Encodes bytes as standard base64. */
export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.byteLength; i++) s += String.fromCharCode(bytes[i]!);
  return btoa(s);
}

/** Decodes standard base64; `null` when `text` is not valid base64. */
export function fromBase64(text: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return null;
  let s: string;
  try {
    s = atob(text);
  } catch {
    return null;
  }
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function xor(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength);
  for (let i = 0; i < a.byteLength; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** `a` followed by `b` (when given). */
function concatBytes(a: Uint8Array, b: Uint8Array | undefined): Uint8Array {
  if (b === undefined || b.byteLength === 0) return a;
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}

function randomNonce(): string {
  return toBase64(crypto.getRandomValues(new Uint8Array(18)));
}

// ---- SASLprep (RFC 4013) ----

// Non-ASCII spaces (stringprep C.1.2): mapped to U+0020.
const NON_ASCII_SPACE = /[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/gu;
// Commonly mapped to nothing (stringprep B.1).
const MAPPED_TO_NOTHING =
  /[\u00AD\u034F\u1806\u180B-\u180D\u200B-\u200D\u2060\uFE00-\uFE0F\uFEFF]/gu;
// Prohibited output (stringprep C.1.2, C.2.1, C.2.2, C.3, C.4, C.5, C.6, C.7, C.8, C.9).
const PROHIBITED = new RegExp(
  "[" +
    "\\u00A0\\u1680\\u2000-\\u200B\\u202F\\u205F\\u3000" +
    "\\u0000-\\u001F\\u007F" +
    "\\u0080-\\u009F\\u06DD\\u070F\\u180E\\u200C\\u200D\\u2028\\u2029\\u2060-\\u2063" +
    "\\u206A-\\u206F\\uFEFF\\uFFF9-\\uFFFC\\u{1D173}-\\u{1D17A}" +
    "\\uE000-\\uF8FF\\u{F0000}-\\u{FFFFD}\\u{100000}-\\u{10FFFD}" +
    "\\uFDD0-\\uFDEF\\uFFFE\\uFFFF\\u{1FFFE}\\u{1FFFF}\\u{2FFFE}\\u{2FFFF}\\u{3FFFE}\\u{3FFFF}" +
    "\\u{4FFFE}\\u{4FFFF}\\u{5FFFE}\\u{5FFFF}\\u{6FFFE}\\u{6FFFF}\\u{7FFFE}\\u{7FFFF}" +
    "\\u{8FFFE}\\u{8FFFF}\\u{9FFFE}\\u{9FFFF}\\u{AFFFE}\\u{AFFFF}\\u{BFFFE}\\u{BFFFF}" +
    "\\u{CFFFE}\\u{CFFFF}\\u{DFFFE}\\u{DFFFF}\\u{EFFFE}\\u{EFFFF}\\u{FFFFE}\\u{FFFFF}" +
    "\\u{10FFFE}\\u{10FFFF}" +
    "\\uD800-\\uDFFF" +
    "\\u2FF0-\\u2FFB" +
    "\\u0340\\u0341\\u200E\\u200F\\u202A-\\u202E" +
    "\\u{E0001}\\u{E0020}-\\u{E007F}" +
    "]",
  "u",
);
// Bidirectional classes (stringprep D.1 RandALCat and D.2 LCat), approximated by script:
// letters of the right-to-left scripts, and letters of every other script.
const RTL_SCRIPT =
  /[\p{Script=Hebrew}\p{Script=Arabic}\p{Script=Syriac}\p{Script=Thaana}\p{Script=Nko}]/u;
const LETTER = /\p{L}/u;

function isRandAL(ch: string): boolean {
  return ch === "\u200F" || (LETTER.test(ch) && RTL_SCRIPT.test(ch));
}

function isLCat(ch: string): boolean {
  return LETTER.test(ch) && !RTL_SCRIPT.test(ch);
}

/**
 * Normalizes a password with SASLprep as Postgres does: ASCII passwords are used as they are;
 * otherwise spaces are mapped, ignorable characters dropped and NFKC applied, and when the
 * result holds prohibited characters (or breaks the bidirectional rule) the password is used
 * unchanged. Unicode 3.2 unassigned code points are not checked, and the bidirectional
 * classes are approximated by script.
 */
export function saslPrep(password: string): string {
  // deno-lint-ignore no-control-regex
  if (/^[\u0000-\u007F]*$/.test(password)) return password;
  const mapped = password.replace(NON_ASCII_SPACE, " ").replace(MAPPED_TO_NOTHING, "")
    .normalize("NFKC");
  if (mapped === "" || PROHIBITED.test(mapped)) return password;
  const chars = [...mapped];
  if (chars.some(isRandAL)) {
    if (chars.some(isLCat) || !isRandAL(chars[0]!) || !isRandAL(chars[chars.length - 1]!)) {
      return password;
    }
  }
  return mapped;
}

// ---- WebCrypto primitives ----

async function hmac(key: Uint8Array, data: Uint8Array | string): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey(
    "raw",
    key as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, bytes as Uint8Array<ArrayBuffer>));
}

async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
}

async function saltedPassword(
  password: string,
  salt: Uint8Array,
  iterations: number,
): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(saslPrep(password)),
    "PBKDF2",
    false,
    ["deriveBits"],
  );
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt: salt as Uint8Array<ArrayBuffer>, iterations },
    key,
    256,
  );
  return new Uint8Array(bits);
}

// ---- verifiers ----

/** A SCRAM-SHA-256 verifier: what a server stores instead of the password. */
export interface ScramVerifier {
  /** PBKDF2 iteration count. */
  iterations: number;
  /** The salt. */
  salt: Uint8Array;
  /** SHA-256(ClientKey). */
  storedKey: Uint8Array;
  /** HMAC(SaltedPassword, "Server Key"). */
  serverKey: Uint8Array;
}

/** Options of {@linkcode createScramVerifier}. */
export interface CreateVerifierOptions {
  /** PBKDF2 iterations; {@linkcode DEFAULT_SCRAM_ITERATIONS} when not given. */
  iterations?: number;
  /** The salt; 16 random bytes when not given. */
  salt?: Uint8Array;
}

async function deriveVerifier(
  password: string,
  salt: Uint8Array,
  iterations: number,
): Promise<ScramVerifier> {
  const salted = await saltedPassword(password, salt, iterations);
  const clientKey = await hmac(salted, "Client Key");
  return {
    iterations,
    salt,
    storedKey: await sha256(clientKey),
    serverKey: await hmac(salted, "Server Key"),
  };
}

/**
 * Creates a verifier for `password` in Postgres's text format, which `CREATE ROLE ... PASSWORD`
 * accepts as is and which the topo stores for users.
 *
 * @example
 * ```ts
 * const verifier = await createScramVerifier("s3cret");
 * // "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"
 * ```
 */
export async function createScramVerifier(
  password: string,
  options: CreateVerifierOptions = {},
): Promise<string> {
  const iterations = options.iterations ?? DEFAULT_SCRAM_ITERATIONS;
  if (!Number.isInteger(iterations) || iterations < 1) {
    throw new RangeError(`'iterations' must be a positive integer: received ${iterations}`);
  }
  const salt = options.salt ?? crypto.getRandomValues(new Uint8Array(SCRAM_SALT_LENGTH));
  return formatScramVerifier(await deriveVerifier(password, salt, iterations));
}

/** Formats a verifier as `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. */
export function formatScramVerifier(v: ScramVerifier): string {
  return `${SCRAM_SHA_256}$${v.iterations}:${toBase64(v.salt)}$${toBase64(v.storedKey)}:${
    toBase64(v.serverKey)
  }`;
}

/** Whether `text` looks like a SCRAM-SHA-256 verifier (rather than a password or MD5 hash). */
export function isScramVerifier(text: string): boolean {
  return text.startsWith(`${SCRAM_SHA_256}$`);
}

/**
 * Parses a verifier in Postgres's format. Throws TesseraError 22023 when malformed; the
 * message never repeats the verifier.
 */
export function parseScramVerifier(text: string): ScramVerifier {
  const bad = (why: string) =>
    new TesseraError(SqlState.invalidParameterValue, `invalid SCRAM-SHA-256 verifier: ${why}`);
  const m = /^SCRAM-SHA-256\$(\d+):([^$:]+)\$([^$:]+):([^$:]+)$/.exec(text);
  if (m === null) {
    throw bad("expected 'SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>'");
  }
  const iterations = Number(m[1]);
  if (!Number.isSafeInteger(iterations) || iterations < 1) {
    throw bad(`iteration count must be positive: received ${m[1]}`);
  }
  const salt = fromBase64(m[2]!);
  const storedKey = fromBase64(m[3]!);
  const serverKey = fromBase64(m[4]!);
  if (salt === null || salt.byteLength === 0) throw bad("the salt is not valid base64");
  if (storedKey === null || storedKey.byteLength !== 32) {
    throw bad("StoredKey is not 32 bytes of base64");
  }
  if (serverKey === null || serverKey.byteLength !== 32) {
    throw bad("ServerKey is not 32 bytes of base64");
  }
  return { iterations, salt, storedKey, serverKey };
}

// ---- message parsing ----

function malformed(detail: string): TesseraError {
  return new TesseraError(SqlState.protocolViolation, "malformed SCRAM message", { detail });
}

/** Splits `a=...,b=...` into attributes, checking each has the `x=` form. */
function attributes(message: string, what: string): [string, string][] {
  return message.split(",").map((part): [string, string] => {
    if (part.length < 2 || part[1] !== "=" || !/^[A-Za-z]$/.test(part[0]!)) {
      throw malformed(`${what}: expected an attribute 'x=value', got '${part.slice(0, 40)}'`);
    }
    return [part[0]!, part.slice(2)];
  });
}

function expectAttr(attrs: [string, string][], index: number, name: string, what: string): string {
  const a = attrs[index];
  if (a === undefined || a[0] !== name) {
    throw malformed(`${what}: expected attribute '${name}' at position ${index + 1}`);
  }
  return a[1];
}

function isValidNonce(nonce: string): boolean {
  // Printable ASCII except ','.
  return nonce.length > 0 && /^[\x21-\x2b\x2d-\x7e]+$/.test(nonce);
}

function saslName(name: string): string {
  return name.replaceAll("=", "=3D").replaceAll(",", "=2C");
}

function asText(data: string | Uint8Array): string {
  return typeof data === "string" ? data : decoder.decode(data);
}

// ---- client ----

/** Options of {@linkcode ScramClient}. */
export interface ScramClientOptions {
  /** User name sent inside SCRAM; empty by default (Postgres uses the startup packet's). */
  username?: string;
  /** Client nonce; random when not given (tests pass the RFC's). */
  nonce?: string;
  /**
   * `tls-server-end-point` channel binding data (the hash of the server's certificate): the
   * exchange is then SCRAM-SHA-256-PLUS and binds the proof to this TLS connection.
   */
  channelBinding?: Uint8Array;
}

/**
 * The client side of one SCRAM-SHA-256 exchange.
 *
 * @example
 * ```ts
 * const scram = new ScramClient(password);
 * send(saslInitialResponse(SCRAM_SHA_256, scram.clientFirstMessage()));
 * send(saslResponse(await scram.clientFinalMessage(serverFirst)));
 * scram.verifyServerFinal(serverFinal); // throws when the server does not know the password
 * ```
 */
export class ScramClient {
  #password: string;
  #nonce: string;
  #gs2Header: string;
  #channelBinding: Uint8Array | undefined;
  #clientFirstBare: string;
  #expectedServerSignature: Uint8Array | null = null;
  #done = false;

  /** Starts an exchange for `password`. */
  constructor(password: string, options: ScramClientOptions = {}) {
    this.#password = password;
    this.#nonce = options.nonce ?? randomNonce();
    if (!isValidNonce(this.#nonce)) {
      throw new RangeError("SCRAM nonce must be printable ASCII without ','");
    }
    this.#clientFirstBare = `n=${saslName(options.username ?? "")},r=${this.#nonce}`;
    this.#channelBinding = options.channelBinding;
    this.#gs2Header = options.channelBinding === undefined ? "n,," : `p=${TLS_SERVER_END_POINT},,`;
  }

  /**
   * The client-first-message, sent in SASLInitialResponse: `n,,n=<user>,r=<nonce>` (with
   * channel binding `p=tls-server-end-point,,n=<user>,r=<nonce>`).
   */
  clientFirstMessage(): string {
    return `${this.#gs2Header}${this.#clientFirstBare}`;
  }

  /**
   * Takes the server-first-message (from AuthenticationSASLContinue) and returns the
   * client-final-message with the proof. Throws TesseraError 08P01 when the server's message
   * is malformed or its nonce does not extend ours.
   */
  async clientFinalMessage(serverFirst: string | Uint8Array): Promise<string> {
    const text = asText(serverFirst);
    const what = "server-first-message";
    const attrs = attributes(text, what);
    if (attrs[0]?.[0] === "m") throw malformed(`${what}: unsupported mandatory extension`);
    const nonce = expectAttr(attrs, 0, "r", what);
    const saltText = expectAttr(attrs, 1, "s", what);
    const iterText = expectAttr(attrs, 2, "i", what);
    if (
      !nonce.startsWith(this.#nonce) || nonce.length === this.#nonce.length || !isValidNonce(nonce)
    ) {
      throw malformed(`${what}: the server nonce does not extend the client nonce`);
    }
    const salt = fromBase64(saltText);
    if (salt === null || salt.byteLength === 0) throw malformed(`${what}: invalid salt`);
    const iterations = Number(iterText);
    if (!/^\d+$/.test(iterText) || !Number.isSafeInteger(iterations) || iterations < 1) {
      throw malformed(`${what}: invalid iteration count '${iterText.slice(0, 20)}'`);
    }
    const binding = toBase64(concatBytes(encoder.encode(this.#gs2Header), this.#channelBinding));
    const withoutProof = `c=${binding},r=${nonce}`;
    const authMessage = `${this.#clientFirstBare},${text},${withoutProof}`;
    const salted = await saltedPassword(this.#password, salt, iterations);
    const clientKey = await hmac(salted, "Client Key");
    const storedKey = await sha256(clientKey);
    const clientSignature = await hmac(storedKey, authMessage);
    const proof = xor(clientKey, clientSignature);
    const serverKey = await hmac(salted, "Server Key");
    this.#expectedServerSignature = await hmac(serverKey, authMessage);
    return `${withoutProof},p=${toBase64(proof)}`;
  }

  /**
   * Checks the server-final-message (from AuthenticationSASLFinal). Throws TesseraError 28000
   * when the server's signature is wrong (it does not know the password), 28P01 when it
   * reports an error, 08P01 when the message is malformed.
   */
  verifyServerFinal(serverFinal: string | Uint8Array): void {
    const text = asText(serverFinal);
    const what = "server-final-message";
    if (this.#expectedServerSignature === null) {
      throw malformed(`${what} arrived before the client-final-message was sent`);
    }
    const attrs = attributes(text, what);
    if (attrs[0]?.[0] === "e") {
      throw new TesseraError(
        SqlState.invalidPassword,
        `SCRAM authentication failed: the server reported '${attrs[0][1]}'`,
      );
    }
    const signature = fromBase64(expectAttr(attrs, 0, "v", what));
    if (signature === null) throw malformed(`${what}: invalid signature encoding`);
    if (!timingSafeEqual(signature, this.#expectedServerSignature)) {
      throw new TesseraError(
        SqlState.invalidAuthorizationSpecification,
        "SCRAM server signature is wrong: the server does not know the password",
      );
    }
    this.#done = true;
  }

  /** Whether the server has proved that it knows the password. */
  get verified(): boolean {
    return this.#done;
  }
}

// ---- server ----

const PROCESS_MOCK_SECRET = crypto.getRandomValues(new Uint8Array(32));

/** Options of {@linkcode ScramServer}. */
export interface ScramServerOptions {
  /** The user being authenticated, for the error message and for mock salts. */
  username?: string;
  /** Server nonce part; random when not given (tests pass the RFC's). */
  nonce?: string;
  /**
   * Secret that makes the mock salt of unknown users stable (so that a client cannot tell
   * unknown users from known ones by the salt changing); a per-process random secret when
   * not given.
   */
  mockSecret?: Uint8Array;
  /**
   * The `tls-server-end-point` channel binding data of this connection, when it is TLS and the
   * server offered SCRAM-SHA-256-PLUS: a client that could bind but thinks the server cannot
   * (flag `y`) is refused, as a downgrade.
   */
  channelBinding?: Uint8Array | undefined;
  /** Whether the client chose SCRAM-SHA-256-PLUS (needs `channelBinding`). */
  plus?: boolean;
}

/**
 * The server side of one SCRAM-SHA-256 exchange, against a stored verifier. With no verifier
 * (unknown user, or a user without a SCRAM password) the exchange runs to its end with a mock
 * salt and then fails exactly like a wrong password.
 *
 * @example
 * ```ts
 * const scram = new ScramServer(parseScramVerifier(user.verifier), { username });
 * send(authenticationSaslContinue(await scram.serverFirstMessage(initial.data)));
 * send(authenticationSaslFinal(await scram.serverFinalMessage(response))); // throws 28P01
 * send(authenticationOk());
 * ```
 */
export class ScramServer {
  #verifier: ScramVerifier | undefined;
  #username: string;
  #serverNonce: string;
  #mockSecret: Uint8Array;
  #clientFirstBare: string | null = null;
  #serverFirst: string | null = null;
  #gs2Header = "";
  #nonce = "";
  #done = false;
  #offered: Uint8Array | undefined;
  #plus: boolean;
  #bound: Uint8Array | undefined;

  /** Prepares to verify a client against `verifier` (a parsed verifier or its text form). */
  constructor(verifier: ScramVerifier | string | undefined, options: ScramServerOptions = {}) {
    this.#verifier = typeof verifier === "string" ? parseScramVerifier(verifier) : verifier;
    this.#username = options.username ?? "";
    this.#serverNonce = options.nonce ?? randomNonce();
    if (!isValidNonce(this.#serverNonce)) {
      throw new RangeError("SCRAM nonce must be printable ASCII without ','");
    }
    this.#mockSecret = options.mockSecret ?? PROCESS_MOCK_SECRET;
    this.#offered = options.channelBinding;
    this.#plus = options.plus === true;
    if (this.#plus && this.#offered === undefined) {
      throw new RangeError("SCRAM-SHA-256-PLUS needs the connection's channel binding data");
    }
  }

  /**
   * Takes the client-first-message (the data of SASLInitialResponse) and returns the
   * server-first-message for AuthenticationSASLContinue. Throws TesseraError 08P01 when the
   * message is malformed, asks for channel binding (`p=`), an authorization identity or a
   * mandatory extension.
   */
  async serverFirstMessage(clientFirst: string | Uint8Array): Promise<string> {
    if (this.#clientFirstBare !== null) throw malformed("client-first-message sent twice");
    const text = asText(clientFirst);
    const what = "client-first-message";
    const first = text.indexOf(",");
    const second = first === -1 ? -1 : text.indexOf(",", first + 1);
    if (second === -1) throw malformed(`${what}: missing GS2 header`);
    const flag = text.slice(0, first);
    const authzid = text.slice(first + 1, second);
    if (this.#plus) {
      if (!flag.startsWith("p=")) {
        throw malformed(`${what}: ${SCRAM_SHA_256_PLUS} was selected without channel binding data`);
      }
      if (flag.slice(2) !== TLS_SERVER_END_POINT) {
        throw malformed(`${what}: unsupported SCRAM channel-binding type '${flag.slice(2, 40)}'`);
      }
      this.#bound = this.#offered;
    } else if (flag.startsWith("p=")) {
      throw malformed(
        `${what}: ${SCRAM_SHA_256} was selected, but the message asks for channel binding`,
      );
    } else if (flag === "y" && this.#offered !== undefined) {
      throw new TesseraError(
        SqlState.protocolViolation,
        "SCRAM channel binding negotiation error",
        {
          detail: "The client supports SCRAM channel binding but thinks the server does not. " +
            "However, this server does support channel binding.",
        },
      );
    } else if (flag !== "n" && flag !== "y") {
      throw malformed(`${what}: unexpected channel binding flag '${flag.slice(0, 10)}'`);
    }
    if (authzid !== "") {
      throw new TesseraError(
        SqlState.featureNotSupported,
        "SCRAM authorization identity (a=) is not supported",
      );
    }
    this.#gs2Header = text.slice(0, second + 1);
    const bare = text.slice(second + 1);
    const attrs = attributes(bare, what);
    if (attrs[0]?.[0] === "m") throw malformed(`${what}: unsupported mandatory extension`);
    expectAttr(attrs, 0, "n", what);
    const clientNonce = expectAttr(attrs, 1, "r", what);
    if (!isValidNonce(clientNonce)) throw malformed(`${what}: invalid nonce`);
    this.#clientFirstBare = bare;
    this.#nonce = clientNonce + this.#serverNonce;
    const { salt, iterations } = this.#verifier ?? {
      salt: (await sha256(new Uint8Array([...this.#mockSecret, ...encoder.encode(this.#username)])))
        .subarray(0, SCRAM_SALT_LENGTH),
      iterations: DEFAULT_SCRAM_ITERATIONS,
    };
    this.#serverFirst = `r=${this.#nonce},s=${toBase64(salt)},i=${iterations}`;
    return this.#serverFirst;
  }

  /**
   * Takes the client-final-message (the data of SASLResponse), checks the proof and returns
   * the server-final-message for AuthenticationSASLFinal. Throws TesseraError 28P01 when the
   * password is wrong (or the user has no verifier), 08P01 when the message is malformed.
   */
  async serverFinalMessage(clientFinal: string | Uint8Array): Promise<string> {
    if (this.#clientFirstBare === null || this.#serverFirst === null) {
      throw malformed("client-final-message arrived before the client-first-message");
    }
    const text = asText(clientFinal);
    const what = "client-final-message";
    const proofAt = text.lastIndexOf(",p=");
    if (proofAt === -1) throw malformed(`${what}: missing proof`);
    const withoutProof = text.slice(0, proofAt);
    const attrs = attributes(withoutProof, what);
    const binding = expectAttr(attrs, 0, "c", what);
    const nonce = expectAttr(attrs, 1, "r", what);
    const sent = fromBase64(binding);
    const expected = concatBytes(encoder.encode(this.#gs2Header), this.#bound);
    if (sent === null || !timingSafeEqual(sent, expected)) {
      if (this.#bound !== undefined) {
        throw new TesseraError(SqlState.protocolViolation, "SCRAM channel binding check failed");
      }
      throw malformed(`${what}: channel binding data does not match the GS2 header`);
    }
    if (nonce !== this.#nonce) throw malformed(`${what}: nonce does not match`);
    const proof = fromBase64(text.slice(proofAt + 3));
    if (proof === null || proof.byteLength !== 32) throw malformed(`${what}: invalid proof`);
    const v = this.#verifier;
    const authMessage = `${this.#clientFirstBare},${this.#serverFirst},${withoutProof}`;
    if (v !== undefined) {
      const clientSignature = await hmac(v.storedKey, authMessage);
      const clientKey = xor(proof, clientSignature);
      if (timingSafeEqual(await sha256(clientKey), v.storedKey)) {
        this.#done = true;
        return `v=${toBase64(await hmac(v.serverKey, authMessage))}`;
      }
    }
    const who = this.#username === "" ? "" : ` for user "${this.#username}"`;
    throw new TesseraError(SqlState.invalidPassword, `password authentication failed${who}`, {
      severity: "FATAL",
    });
  }

  /** Whether the client has proved that it knows the password. */
  get verified(): boolean {
    return this.#done;
  }
}
