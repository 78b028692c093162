/**
 * A cheap lexical scan of SQL text, in bytes, for the few things the pooler must notice
 * without parsing: statements that create state that cannot move between backends (temporary
 * tables, LISTEN, session advisory locks, WITH HOLD cursors), statements that may remove it,
 * `set_config` calls, `pg_backend_pid()` calls and SQL-level PREPARE / EXECUTE / DEALLOCATE.
 *
 * The scan skips string literals, quoted identifiers, dollar-quoted strings and comments, so
 * a keyword inside a literal never fires. A trigger may fire where nothing happens (a column
 * named `temp` in a CREATE statement): triggers only cause the pooler to ask the backend,
 * which gives the exact answer.
 *
 * @module
 */

/** Bits returned by {@linkcode scanSql}. */
export const Trigger = {
  /** A temporary object may have been created (CREATE TEMP, INTO TEMP, pg_temp., DO, CALL). */
  temp: 1,
  /** LISTEN. */
  listen: 2,
  /** A session-level advisory lock function was called. */
  advisory: 4,
  /** DECLARE ... WITH HOLD. */
  hold: 8,
  /** A statement that may remove pinned state: UNLISTEN, DISCARD, DROP, CLOSE, advisory unlock. */
  unpin: 16,
  /** A session setting may change outside SET/RESET (`set_config`, DISCARD, DO, CALL). */
  settings: 32,
  /** `pg_backend_pid()` is called. */
  backendPid: 64,
  /** A statement starts with PREPARE, EXECUTE or DEALLOCATE. */
  sqlPrepare: 128,
  /** The text holds more than one statement. */
  multi: 256,
  /** A statement starts with SET or RESET. */
  setStatement: 512,
  /**
   * DROP DATABASE, CREATE DATABASE or ALTER DATABASE: statements that fail while other
   * connections use the database they name (see {@linkcode findExclusiveDatabases}).
   */
  databaseDdl: 1024,
} as const;

/** Any trigger that calls for checking pinned state at the end of the transaction. */
export const PIN_TRIGGERS = Trigger.temp | Trigger.listen | Trigger.advisory | Trigger.hold;

/** Token kinds of {@linkcode SqlLexer}. */
export const Tok = {
  eof: 0,
  ident: 1,
  quotedIdent: 2,
  string: 3,
  semicolon: 4,
  lparen: 5,
  rparen: 6,
  dot: 7,
  other: 8,
} as const;

// Keyword codes (0: not a keyword we care about).
const KW_CREATE = 1;
const KW_TEMP = 2;
const KW_INTO = 3;
const KW_LISTEN = 4;
const KW_UNLISTEN = 5;
const KW_DISCARD = 6;
const KW_DROP = 7;
const KW_CLOSE = 8;
const KW_DECLARE = 9;
const KW_HOLD = 10;
const KW_PREPARE = 11;
const KW_EXECUTE = 12;
const KW_DEALLOCATE = 13;
const KW_PG_TEMP = 14;
const KW_ADV_LOCK = 15;
const KW_ADV_UNLOCK = 16;
const KW_SET_CONFIG = 17;
const KW_BACKEND_PID = 18;
const KW_ALL = 19;
const KW_AS = 20;
const KW_PG_CATALOG = 21;
const KW_SET = 22;
const KW_RESET = 23;
const KW_SESSION = 24;
const KW_LOCAL = 25;
const KW_TRANSACTION = 26;
const KW_DO = 27;
const KW_CALL = 28;
const KW_DATABASE = 29;
const KW_ALTER = 30;
const KW_TEMPLATE = 31;
const KW_IF = 32;
const KW_EXISTS = 33;
const KW_RENAME = 34;
const KW_TABLESPACE = 35;

const KEYWORDS: Record<string, number> = {
  create: KW_CREATE,
  temp: KW_TEMP,
  temporary: KW_TEMP,
  into: KW_INTO,
  listen: KW_LISTEN,
  unlisten: KW_UNLISTEN,
  discard: KW_DISCARD,
  drop: KW_DROP,
  close: KW_CLOSE,
  declare: KW_DECLARE,
  hold: KW_HOLD,
  prepare: KW_PREPARE,
  execute: KW_EXECUTE,
  deallocate: KW_DEALLOCATE,
  pg_temp: KW_PG_TEMP,
  pg_advisory_lock: KW_ADV_LOCK,
  pg_advisory_lock_shared: KW_ADV_LOCK,
  pg_try_advisory_lock: KW_ADV_LOCK,
  pg_try_advisory_lock_shared: KW_ADV_LOCK,
  pg_advisory_unlock: KW_ADV_UNLOCK,
  pg_advisory_unlock_shared: KW_ADV_UNLOCK,
  pg_advisory_unlock_all: KW_ADV_UNLOCK,
  set_config: KW_SET_CONFIG,
  pg_backend_pid: KW_BACKEND_PID,
  all: KW_ALL,
  as: KW_AS,
  pg_catalog: KW_PG_CATALOG,
  set: KW_SET,
  reset: KW_RESET,
  session: KW_SESSION,
  local: KW_LOCAL,
  transaction: KW_TRANSACTION,
  do: KW_DO,
  call: KW_CALL,
  database: KW_DATABASE,
  alter: KW_ALTER,
  template: KW_TEMPLATE,
  if: KW_IF,
  exists: KW_EXISTS,
  rename: KW_RENAME,
  tablespace: KW_TABLESPACE,
};

/** Keywords by length: [bytes, code] pairs, so a token is matched without building a string. */
const BY_LENGTH: [Uint8Array, number][][] = [];
for (const [word, code] of Object.entries(KEYWORDS)) {
  (BY_LENGTH[word.length] ??= []).push([new TextEncoder().encode(word), code]);
}

function isIdentStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || c >= 0x80;
}

function isIdentPart(c: number): boolean {
  return isIdentStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x24;
}

/** Byte classes, looked up instead of compared: bit 1 space, 2 identifier start, 4 identifier part. */
const CLASS = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  CLASS[c] = (c === 0x20 || (c >= 0x09 && c <= 0x0d) ? 1 : 0) | (isIdentStart(c) ? 2 : 0) |
    (isIdentPart(c) ? 4 : 0);
}

/**
 * Whether some keyword has the length and first letter (lowercased) of a token: most identifiers
 * are ruled out by one lookup. Indexed by length * 32 + (letter & 31).
 */
const MAY_BE_KEYWORD = new Uint8Array(64 * 32);
for (const word of Object.keys(KEYWORDS)) {
  MAY_BE_KEYWORD[word.length * 32 + (word.charCodeAt(0) & 31)] = 1;
}

/**
 * A tokenizer over SQL bytes that keeps its state in fields (no allocation per token): after
 * {@linkcode next}, `start` and `end` delimit the token and `keyword` holds its keyword code.
 */
export class SqlLexer {
  /** The text. */
  buf: Uint8Array;
  /** Offset where scanning stops. */
  limit: number;
  /** Current offset. */
  pos: number;
  /** Start of the last token. */
  start = 0;
  /** End of the last token (exclusive). */
  end = 0;
  /** Keyword code of the last token when it is an unquoted identifier we know, else 0. */
  keyword = 0;

  /** Scans `buf` from `start` to `limit`. */
  constructor(buf: Uint8Array, start = 0, limit = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.limit = limit;
  }

  /** Starts over on other text (so one lexer serves many scans). */
  reset(buf: Uint8Array, start: number, limit: number): this {
    this.buf = buf;
    this.pos = start;
    this.limit = limit;
    this.start = this.end = this.keyword = 0;
    return this;
  }

  /** Reads the next token and returns its kind (see {@linkcode Tok}). */
  next(): number {
    const b = this.buf;
    const n = this.limit;
    let i = this.pos;
    this.keyword = 0;
    for (;;) {
      // Whitespace and comments.
      while (i < n && (CLASS[b[i]!]! & 1) !== 0) i++;
      if (i >= n) {
        this.pos = this.start = this.end = n;
        return Tok.eof;
      }
      const c = b[i]!;
      if (c === 0x2d && b[i + 1] === 0x2d) { // --
        i += 2;
        while (i < n && b[i] !== 0x0a) i++;
        continue;
      }
      if (c === 0x2f && b[i + 1] === 0x2a) { // /* nested */
        let depth = 1;
        i += 2;
        while (i < n && depth > 0) {
          if (b[i] === 0x2a && b[i + 1] === 0x2f) {
            depth--;
            i += 2;
          } else if (b[i] === 0x2f && b[i + 1] === 0x2a) {
            depth++;
            i += 2;
          } else i++;
        }
        continue;
      }
      break;
    }
    const c = b[i]!;
    this.start = i;
    let kind: number;
    if ((CLASS[c]! & 2) !== 0) {
      // E'...' escape string: the prefix letter directly followed by a quote.
      if ((c === 0x45 || c === 0x65) && b[i + 1] === 0x27) {
        i = this.#skipString(i + 1, true);
        kind = Tok.string;
      } else {
        i++;
        while (i < n && (CLASS[b[i]!]! & 4) !== 0) i++;
        kind = Tok.ident;
        const len = i - this.start;
        if (len < 64 && MAY_BE_KEYWORD[len * 32 + (c & 31)] === 1) {
          this.keyword = this.#match(BY_LENGTH[len]!, this.start, len);
        }
      }
    } else if (c === 0x27) {
      i = this.#skipString(i, false);
      kind = Tok.string;
    } else if (c === 0x22) {
      i++;
      for (;;) {
        while (i < n && b[i] !== 0x22) i++;
        if (i + 1 < n && b[i + 1] === 0x22) {
          i += 2;
          continue;
        }
        i = Math.min(n, i + 1);
        break;
      }
      kind = Tok.quotedIdent;
    } else if (c === 0x24) {
      i = this.#dollar(i);
      kind = i < 0 ? Tok.other : Tok.string;
      if (i < 0) i = this.start + 1;
    } else if (c === 0x3b) {
      i++;
      kind = Tok.semicolon;
    } else if (c === 0x28) {
      i++;
      kind = Tok.lparen;
    } else if (c === 0x29) {
      i++;
      kind = Tok.rparen;
    } else if (c === 0x2e) {
      i++;
      kind = Tok.dot;
    } else {
      i++;
      // Runs of digits (numbers, $1 parameters) and operators are all "other".
      while (i < n && b[i]! >= 0x30 && b[i]! <= 0x39) i++;
      kind = Tok.other;
    }
    this.pos = this.end = i;
    return kind;
  }

  #match(cands: [Uint8Array, number][], at: number, len: number): number {
    const b = this.buf;
    outer: for (const [word, code] of cands) {
      for (let k = 0; k < len; k++) {
        let ch = b[at + k]!;
        if (ch >= 0x41 && ch <= 0x5a) ch |= 0x20;
        if (ch !== word[k]) continue outer;
      }
      return code;
    }
    return 0;
  }

  /** Skips a quoted string starting at the quote at `i`; returns the offset after it. */
  #skipString(i: number, backslash: boolean): number {
    const b = this.buf;
    const n = this.limit;
    i++;
    while (i < n) {
      const ch = b[i]!;
      if (backslash && ch === 0x5c) {
        i += 2;
        continue;
      }
      if (ch === 0x27) {
        if (b[i + 1] === 0x27) {
          i += 2;
          continue;
        }
        return i + 1;
      }
      i++;
    }
    return n;
  }

  /** A dollar-quoted string at `i`: returns the offset after it, or -1 when `$` starts none. */
  #dollar(i: number): number {
    const b = this.buf;
    const n = this.limit;
    let j = i + 1;
    if (j < n && b[j]! >= 0x30 && b[j]! <= 0x39) return -1; // $1 parameter
    while (j < n && b[j] !== 0x24) {
      if (!isIdentPart(b[j]!) || b[j] === 0x24) return -1;
      j++;
    }
    if (j >= n) return -1;
    const tagLen = j - i + 1; // includes both dollars
    let k = j + 1;
    while (k < n) {
      if (b[k] === 0x24) {
        let same = k + tagLen <= n;
        for (let t = 0; same && t < tagLen; t++) same = b[k + t] === b[i + t];
        if (same) return k + tagLen;
      }
      k++;
    }
    return n;
  }
}

/** Whether `buf[at, at + word.length)` is `word` (lowercase ASCII), ignoring case. */
function hasWord(buf: Uint8Array, at: number, end: number, word: Uint8Array): boolean {
  if (at + word.length > end) return false;
  for (let k = 0; k < word.length; k++) {
    let ch = buf[at + k]!;
    if (ch >= 0x41 && ch <= 0x5a) ch |= 0x20;
    if (ch !== word[k]) return false;
  }
  return true;
}

/** Substrings {@linkcode mayTrigger} looks for. */
const TRIGGER_WORDS = ["temp", "advisory", "hold", "set_config", "backend_pid"];
/** For a byte that starts one of them (either case): the rest of that word, lowercase. */
const REST_OF_WORD: (Uint8Array | undefined)[] = new Array(256);
/**
 * The byte pairs {@linkcode mayTrigger} must look at, as a bit set indexed by
 * `byte << 8 | (next byte | 0x20)`: a `;` followed by anything, and the first two letters of a
 * trigger word (the first in either case). One lookup rules out almost every other byte.
 */
const PAIRS = new Uint8Array(65536 / 8);
function addPair(first: number, second: number): void {
  const p = (first << 8) | second;
  PAIRS[p >> 3]! |= 1 << (p & 7);
}
for (let next = 0; next < 256; next++) addPair(0x3b, next | 0x20);
for (const word of TRIGGER_WORDS) {
  const rest = new TextEncoder().encode(word.slice(1));
  REST_OF_WORD[word.charCodeAt(0)] = REST_OF_WORD[word.toUpperCase().charCodeAt(0)] = rest;
  addPair(word.charCodeAt(0), rest[0]!);
  addPair(word.toUpperCase().charCodeAt(0), rest[0]!);
}

/**
 * A quick look that rules out most statements (plain SELECT, INSERT, UPDATE...) without
 * tokenizing: false only when no trigger can apply. Every trigger needs a keyword as the first
 * word, a second statement, or one of the substrings "temp", "advisory", "hold", "set_config"
 * and "backend_pid"; a match anywhere (even inside a literal) sends the text to the full scan.
 */
function mayTrigger(buf: Uint8Array, start: number, end: number): boolean {
  let i = start;
  while (i < end && ((CLASS[buf[i]!]! & 1) !== 0 || buf[i] === 0x28)) i++;
  if (i === end) return false;
  // The first word: an ASCII letter run that is no keyword (a comment or anything else: look).
  const c = buf[i]!;
  if (((c | 0x20) < 0x61 || (c | 0x20) > 0x7a)) return true;
  let j = i + 1;
  while (j < end && (CLASS[buf[j]!]! & 4) !== 0) j++;
  const len = j - i;
  if (len < 64 && MAY_BE_KEYWORD[len * 32 + (c & 31)] === 1) return true;
  // The last byte starts no pair: a `;` there ends the text, and no word fits after it.
  const last = end - 1;
  for (; j < last; j++) {
    const pair = (buf[j]! << 8) | (buf[j + 1]! | 0x20);
    if ((PAIRS[pair >> 3]! & (1 << (pair & 7))) === 0) continue;
    const ch = buf[j]!;
    if (ch === 0x3b) { // `;`: a second statement unless only spaces follow
      let k = j + 1;
      while (k < end && (CLASS[buf[k]!]! & 1) !== 0) k++;
      if (k < end) return true;
      continue;
    }
    if (hasWord(buf, j + 1, end, REST_OF_WORD[ch]!)) return true;
  }
  return false;
}

/**
 * Scans SQL text and returns the {@linkcode Trigger} bits that apply. Runs in time linear in
 * the text and allocates nothing but the lexer.
 */
const shared = new SqlLexer(new Uint8Array(0));

export function scanSql(buf: Uint8Array, start = 0, end = buf.length): number {
  return mayTrigger(buf, start, end) ? scanSqlTokens(buf, start, end) : 0;
}

/** {@linkcode scanSql} without its quick look: every token is read. */
export function scanSqlTokens(buf: Uint8Array, start = 0, end = buf.length): number {
  const lx = shared.reset(buf, start, end);
  let flags = 0;
  let statements = 0;
  let first = 0; // keyword code of the current statement's first word; -1: a non-keyword word
  let prev = 0;
  // After a first word PREPARE: 1, and 2 after PREPARE TRANSACTION. `PREPARE TRANSACTION 'gid'`
  // is two-phase commit, not a named statement (one named "transaction" is followed by AS or
  // a parenthesis, never a string).
  let prepare = 0;
  let words = 0; // tokens of the current statement so far
  for (;;) {
    const tok = lx.next();
    const second = ++words === 2;
    if (prepare !== 0) {
      if (prepare === 1 && tok === Tok.ident && lx.keyword === KW_TRANSACTION) prepare = 2;
      else {
        if (prepare === 1 || tok !== Tok.string) flags |= Trigger.sqlPrepare;
        prepare = 0;
      }
    }
    if (tok === Tok.eof) break;
    if (tok === Tok.semicolon) {
      first = 0;
      prev = 0;
      words = 0;
      continue;
    }
    if (first === 0 && tok !== Tok.lparen) {
      statements++;
      first = tok === Tok.ident && lx.keyword !== 0 ? lx.keyword : -1;
      switch (first) {
        case KW_LISTEN:
          flags |= Trigger.listen;
          break;
        case KW_UNLISTEN:
        case KW_DROP:
        case KW_CLOSE:
          flags |= Trigger.unpin;
          break;
        case KW_DISCARD:
          flags |= Trigger.unpin | Trigger.settings;
          break;
        case KW_PREPARE:
          prepare = 1; // flagged once the next word shows it is no PREPARE TRANSACTION
          break;
        case KW_EXECUTE:
        case KW_DEALLOCATE:
          flags |= Trigger.sqlPrepare;
          break;
        case KW_SET:
        case KW_RESET:
          flags |= Trigger.setStatement;
          break;
        case KW_DO:
        case KW_CALL:
          // Code the scan cannot see into (a DO block's body, a procedure) may create temporary
          // tables, LISTEN, take advisory locks or change settings: the backend is asked.
          flags |= Trigger.settings | PIN_TRIGGERS;
          break;
      }
    }
    if (tok !== Tok.ident) {
      prev = 0;
      continue;
    }
    if (
      lx.keyword === KW_DATABASE && second &&
      (first === KW_DROP || first === KW_CREATE || first === KW_ALTER)
    ) flags |= Trigger.databaseDdl;
    switch (lx.keyword) {
      case KW_TEMP:
        if (first === KW_CREATE || prev === KW_INTO) flags |= Trigger.temp;
        break;
      case KW_PG_TEMP:
        flags |= Trigger.temp;
        break;
      case KW_HOLD:
        if (first === KW_DECLARE) flags |= Trigger.hold;
        break;
      case KW_ADV_LOCK:
        flags |= Trigger.advisory;
        break;
      case KW_ADV_UNLOCK:
        flags |= Trigger.unpin;
        break;
      case KW_SET_CONFIG:
        flags |= Trigger.settings;
        break;
      case KW_BACKEND_PID:
        flags |= Trigger.backendPid;
        break;
    }
    prev = lx.keyword;
  }
  if (statements > 1) flags |= Trigger.multi;
  return flags;
}

const encoder = new TextEncoder();

function concatParts(parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Replaces every call `pg_backend_pid()` (also `pg_catalog.pg_backend_pid()`) in the SQL bytes
 * with a scalar subquery returning `pid` under the same column name, so clients see the pooler's
 * virtual process id, the one their BackendKeyData carries. Returns `null` when there is none.
 */
export function rewriteBackendPid(
  buf: Uint8Array,
  start: number,
  end: number,
  pid: number,
): Uint8Array | null {
  const lx = new SqlLexer(buf, start, end);
  const parts: Uint8Array[] = [];
  let copied = start;
  const replacement = encoder.encode(`(SELECT ${pid | 0}::int4 AS pg_backend_pid)`);
  // Positions of the last two tokens, to take in a `pg_catalog.` qualifier.
  let prevKind = 0;
  let prevStart = 0;
  let prev2Keyword = 0;
  let prev2Start = 0;
  let prevKeyword = 0;
  for (;;) {
    const tok = lx.next();
    if (tok === Tok.eof) break;
    if (tok === Tok.ident && lx.keyword === KW_BACKEND_PID) {
      const callStart = prevKind === Tok.dot && prev2Keyword === KW_PG_CATALOG
        ? prev2Start
        : lx.start;
      const save = lx.pos;
      if (lx.next() === Tok.lparen && lx.next() === Tok.rparen) {
        if (callStart >= copied) {
          parts.push(buf.subarray(copied, callStart), replacement);
          copied = lx.end;
        }
        prevKind = Tok.rparen;
        prevKeyword = 0;
        continue;
      }
      lx.pos = save;
    }
    prev2Keyword = prevKind === Tok.ident ? prevKeyword : 0;
    prev2Start = prevStart;
    prevKind = tok;
    prevStart = lx.start;
    prevKeyword = tok === Tok.ident ? lx.keyword : 0;
  }
  if (parts.length === 0) return null;
  parts.push(buf.subarray(copied, end));
  return concatParts(parts);
}

/** One SQL-level PREPARE, EXECUTE or DEALLOCATE found at the start of a statement. */
export interface SqlPrepareOp {
  /** Which statement. */
  kind: "prepare" | "execute" | "deallocate";
  /** The statement name as Postgres folds it; `null` for DEALLOCATE ALL or a missing name. */
  name: string | null;
  /** DEALLOCATE [PREPARE] ALL. */
  all: boolean;
  /** Offsets of the name token in the text (`nameStart === nameEnd` when there is none). */
  nameStart: number;
  /** End of the name token. */
  nameEnd: number;
  /** End of the statement (its semicolon, or the end of the text). */
  stmtEnd: number;
}

const decoder = new TextDecoder();

function identName(buf: Uint8Array, kind: number, start: number, end: number): string {
  if (kind === Tok.quotedIdent) {
    return decoder.decode(buf.subarray(start + 1, end - 1)).replaceAll('""', '"');
  }
  // Unquoted identifiers fold to lower case (ASCII letters only, as Postgres does).
  let s = decoder.decode(buf.subarray(start, end));
  if (/[A-Z]/.test(s)) s = s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
  return s;
}

/**
 * Databases that statements of the SQL bytes need free of other connections: the one DROP
 * DATABASE drops, the one ALTER DATABASE renames or moves to another tablespace, and the
 * template CREATE DATABASE copies (`template0` excepted: no one connects to it). Postgres waits
 * up to 5 seconds for such connections to end, then fails with 55006; the pooler closes its idle
 * ones first.
 */
export function findExclusiveDatabases(buf: Uint8Array, start = 0, end = buf.length): string[] {
  const lx = new SqlLexer(buf, start, end);
  const names: string[] = [];
  const name = (tok: number): string | null =>
    tok === Tok.ident || tok === Tok.quotedIdent ? identName(buf, tok, lx.start, lx.end) : null;
  // The keyword of the token just read (a function: each next() changes it).
  const keyword = (tok: number): number => tok === Tok.ident ? lx.keyword : 0;
  let atStart = true;
  for (;;) {
    const tok = lx.next();
    if (tok === Tok.eof) break;
    if (tok === Tok.semicolon) {
      atStart = true;
      continue;
    }
    if (!atStart) continue;
    atStart = false;
    const verb = keyword(tok);
    if (verb !== KW_DROP && verb !== KW_CREATE && verb !== KW_ALTER) continue;
    if (keyword(lx.next()) !== KW_DATABASE) continue;
    let t = lx.next();
    if (verb === KW_DROP && keyword(t) === KW_IF) {
      if (keyword(lx.next()) !== KW_EXISTS) continue;
      t = lx.next();
    }
    const db = name(t);
    if (db === null) continue;
    if (verb === KW_DROP) {
      names.push(db);
      continue;
    }
    // The rest of the statement: ALTER's RENAME or SET TABLESPACE, CREATE's TEMPLATE [=] name.
    let prevKw = 0;
    for (;;) {
      t = lx.next();
      if (t === Tok.eof || t === Tok.semicolon) {
        atStart = true;
        break;
      }
      const kw = keyword(t);
      if (verb === KW_ALTER && (kw === KW_RENAME || (kw === KW_TABLESPACE && prevKw === KW_SET))) {
        names.push(db);
      } else if (verb === KW_CREATE && kw === KW_TEMPLATE) {
        t = lx.next();
        if (t === Tok.other) t = lx.next(); // TEMPLATE = name
        const template = t === Tok.string ? stringValue(buf, lx.start, lx.end) : name(t);
        if (template !== null && template !== "template0") names.push(template);
      }
      prevKw = kw;
    }
    if (t === Tok.eof) break;
  }
  return names;
}

/**
 * Lists the PREPARE, EXECUTE and DEALLOCATE statements of the SQL bytes (those at the start of a
 * statement), with the position of each statement name so the caller can rewrite it.
 */
export function findSqlPrepareOps(buf: Uint8Array, start = 0, end = buf.length): SqlPrepareOp[] {
  const lx = new SqlLexer(buf, start, end);
  const ops: SqlPrepareOp[] = [];
  let atStart = true;
  let current: SqlPrepareOp | null = null;
  for (;;) {
    const tok = lx.next();
    if (tok === Tok.eof || tok === Tok.semicolon) {
      if (current !== null) {
        current.stmtEnd = tok === Tok.eof ? end : lx.start;
        ops.push(current);
        current = null;
      }
      if (tok === Tok.eof) break;
      atStart = true;
      continue;
    }
    if (!atStart) continue;
    atStart = false;
    if (tok !== Tok.ident) continue;
    const kw = lx.keyword;
    if (kw !== KW_PREPARE && kw !== KW_EXECUTE && kw !== KW_DEALLOCATE) continue;
    const kind = kw === KW_PREPARE ? "prepare" : kw === KW_EXECUTE ? "execute" : "deallocate";
    let t = lx.next();
    if (kind === "prepare" && t === Tok.ident && lx.keyword === KW_TRANSACTION) {
      // PREPARE TRANSACTION 'gid' (two-phase commit) names no statement.
      const { pos, start: s, end: e } = lx;
      if (lx.next() === Tok.string) continue;
      lx.pos = pos;
      lx.start = s;
      lx.end = e;
      lx.keyword = KW_TRANSACTION;
    }
    if (kind === "deallocate" && t === Tok.ident && lx.keyword === KW_PREPARE) t = lx.next();
    current = {
      kind,
      name: null,
      all: false,
      nameStart: lx.start,
      nameEnd: lx.start,
      stmtEnd: end,
    };
    if (kind === "deallocate" && t === Tok.ident && lx.keyword === KW_ALL) {
      current.all = true; // a statement named "all" must be quoted
    } else if (t === Tok.ident || t === Tok.quotedIdent) {
      current.name = identName(buf, t, lx.start, lx.end);
      current.nameEnd = lx.end;
    } else if (t === Tok.eof || t === Tok.semicolon) {
      current.stmtEnd = t === Tok.eof ? end : lx.start;
      ops.push(current);
      current = null;
      if (t === Tok.eof) break;
      atStart = true;
    }
  }
  return ops;
}

/**
 * The text inside a string token: after `$tag$` and before the closing one as it is; inside
 * `'...'` or `E'...'` with its doubled (or, in E'', backslash-escaped) quotes made single.
 */
function stringBody(buf: Uint8Array, start: number, end: number): Uint8Array {
  if (buf[start] === 0x24) {
    let tag = start + 1;
    while (tag < end && buf[tag] !== 0x24) tag++;
    const len = tag + 1 - start;
    return end - start >= 2 * len ? buf.subarray(start + len, end - len) : new Uint8Array(0);
  }
  const escapes = buf[start] !== 0x27; // E'...'
  const out = new Uint8Array(Math.max(0, end - start - 2));
  let n = 0;
  for (let i = escapes ? start + 2 : start + 1; i < end - 1; i++) {
    const c = buf[i]!;
    if ((c === 0x27 || (escapes && c === 0x5c)) && i + 1 < end - 1) i++;
    out[n++] = buf[i]!;
  }
  return out.subarray(0, n);
}

function stringValue(buf: Uint8Array, start: number, end: number): string | null {
  if (buf[start] !== 0x27 || buf[end - 1] !== 0x27 || end - start < 2) return null;
  return decoder.decode(buf.subarray(start + 1, end - 1)).replaceAll("''", "'");
}

/**
 * Names of custom (dotted) settings the SQL may set: `SET [SESSION|LOCAL] a.b`, `RESET a.b`
 * and `set_config('a.b', ...)` with a literal name. Postgres does not list such placeholder
 * settings in pg_settings, so the pooler must ask for them by name.
 */
export function findCustomSettingNames(buf: Uint8Array, start = 0, end = buf.length): string[] {
  const lx = new SqlLexer(buf, start, end);
  const names: string[] = [];
  let atStart = true;
  let inDo = false; // in a DO statement: its body is SQL too
  for (;;) {
    let tok = lx.next();
    if (tok === Tok.eof) break;
    if (tok === Tok.semicolon) {
      atStart = true;
      inDo = false;
      continue;
    }
    const first = atStart;
    atStart = false;
    if (inDo && tok === Tok.string) {
      const body = stringBody(buf, lx.start, lx.end);
      names.push(...findCustomSettingNames(body, 0, body.length));
      continue;
    }
    if (tok !== Tok.ident) continue;
    if (first && lx.keyword === KW_DO) {
      inDo = true;
      continue;
    }
    if (first && (lx.keyword === KW_SET || lx.keyword === KW_RESET)) {
      tok = lx.next();
      const kw: number = lx.keyword; // next() changed it
      if (tok === Tok.ident && (kw === KW_SESSION || kw === KW_LOCAL)) {
        tok = lx.next();
      }
      if (tok !== Tok.ident && tok !== Tok.quotedIdent) continue;
      const a = identName(buf, tok, lx.start, lx.end);
      if (lx.next() !== Tok.dot) continue;
      const t2 = lx.next();
      if (t2 !== Tok.ident && t2 !== Tok.quotedIdent) continue;
      names.push(`${a}.${identName(buf, t2, lx.start, lx.end)}`);
    } else if (lx.keyword === KW_SET_CONFIG) {
      if (lx.next() !== Tok.lparen || lx.next() !== Tok.string) continue;
      const name = stringValue(buf, lx.start, lx.end);
      if (name !== null && name.includes(".")) names.push(name);
    }
  }
  return names;
}
