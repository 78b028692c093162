/**
 * Recognizes a `BEGIN` that the session may answer itself and send later, together with the
 * transaction's first statement (a "deferred BEGIN"): the client saves a round trip, and no
 * backend is held between its BEGIN and its first statement.
 *
 * Only forms that cannot fail on an idle backend qualify, because the pooler tells the client
 * they succeeded before Postgres sees them: `BEGIN [WORK | TRANSACTION]` or `START TRANSACTION`,
 * each with at most one of each of `ISOLATION LEVEL READ COMMITTED | REPEATABLE READ | READ
 * UNCOMMITTED`, `READ ONLY` and `[NOT] DEFERRABLE`, separated by spaces or commas, with an
 * optional `;`. `SERIALIZABLE` and `READ WRITE` are left to Postgres: on a hot standby they
 * fail at BEGIN itself. Anything else (comments, other words, several statements) is not
 * deferred.
 *
 * @module
 */

const MAX_LENGTH = 160;

const enum W {
  other,
  begin,
  start,
  work,
  transaction,
  isolation,
  level,
  read,
  committed,
  uncommitted,
  repeatable,
  only,
  write,
  serializable,
  deferrable,
  not,
  comma,
  semicolon,
}

const WORDS: Record<string, W> = {
  begin: W.begin,
  start: W.start,
  work: W.work,
  transaction: W.transaction,
  isolation: W.isolation,
  level: W.level,
  read: W.read,
  committed: W.committed,
  uncommitted: W.uncommitted,
  repeatable: W.repeatable,
  only: W.only,
  write: W.write,
  serializable: W.serializable,
  deferrable: W.deferrable,
  not: W.not,
};

function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/** The words of `buf[start, end)`, or null when it holds anything but letters, spaces, `,`, `;`. */
function words(buf: Uint8Array, start: number, end: number): W[] | null {
  const out: W[] = [];
  let i = start;
  while (i < end) {
    const c = buf[i]!;
    if (isSpace(c)) {
      i++;
    } else if (c === 0x2c || c === 0x3b) {
      out.push(c === 0x2c ? W.comma : W.semicolon);
      i++;
    } else if ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x7a) {
      let s = "";
      while (i < end && ((buf[i]! | 0x20) >= 0x61 && (buf[i]! | 0x20) <= 0x7a)) {
        s += String.fromCharCode(buf[i]! | 0x20);
        i++;
      }
      out.push(WORDS[s] ?? W.other);
    } else {
      return null;
    }
  }
  return out;
}

/** Whether the Query text in `buf[start, end)` is a BEGIN the session may defer. */
export function isDeferrableBegin(buf: Uint8Array, start: number, end: number): boolean {
  if (end - start > MAX_LENGTH) return false;
  // Cheap exit for every other statement: the first word must start with "begin" or "start".
  let i = start;
  while (i < end && isSpace(buf[i]!)) i++;
  if (i + 5 > end) return false;
  const c0 = buf[i]! | 0x20;
  const c1 = buf[i + 1]! | 0x20;
  const c2 = buf[i + 2]! | 0x20;
  const c3 = buf[i + 3]! | 0x20;
  const c4 = buf[i + 4]! | 0x20;
  const begin = c0 === 0x62 && c1 === 0x65 && c2 === 0x67 && c3 === 0x69 && c4 === 0x6e;
  const startWord = c0 === 0x73 && c1 === 0x74 && c2 === 0x61 && c3 === 0x72 && c4 === 0x74;
  if (!begin && !startWord) return false;
  if (begin) {
    // The usual form, `BEGIN` or `BEGIN;`, without building words.
    let j = i + 5;
    while (j < end && isSpace(buf[j]!)) j++;
    if (j < end && buf[j] === 0x3b) {
      j++;
      while (j < end && isSpace(buf[j]!)) j++;
    }
    if (j === end) return true;
  }
  const w = words(buf, i, end);
  if (w === null) return false;
  let k = 0;
  if (w[k] === W.begin) {
    k++;
    if (w[k] === W.work || w[k] === W.transaction) k++;
  } else if (w[k] === W.start && w[k + 1] === W.transaction) {
    k += 2;
  } else {
    return false;
  }
  let isolation = false;
  let access = false;
  let deferrable = false;
  let modes = 0;
  while (k < w.length && w[k] !== W.semicolon) {
    if (modes > 0 && w[k] === W.comma) k++;
    if (w[k] === W.isolation && w[k + 1] === W.level && !isolation) {
      k += 2;
      if (w[k] === W.read && (w[k + 1] === W.committed || w[k + 1] === W.uncommitted)) k += 2;
      else if (w[k] === W.repeatable && w[k + 1] === W.read) k += 2;
      else return false;
      isolation = true;
    } else if (w[k] === W.read && w[k + 1] === W.only && !access) {
      k += 2;
      access = true;
    } else if (w[k] === W.deferrable && !deferrable) {
      k++;
      deferrable = true;
    } else if (w[k] === W.not && w[k + 1] === W.deferrable && !deferrable) {
      k += 2;
      deferrable = true;
    } else {
      return false;
    }
    modes++;
  }
  // At most one `;`, and nothing after it.
  return k === w.length || (w[k] === W.semicolon && k === w.length - 1);
}

/** Whether the first byte of `buf[start, end)` that is not a space is an ASCII letter. */
export function startsWithLetter(buf: Uint8Array, start: number, end: number): boolean {
  let i = start;
  while (i < end && isSpace(buf[i]!)) i++;
  if (i >= end) return false;
  const c = buf[i]! | 0x20;
  return c >= 0x61 && c <= 0x7a;
}

/**
 * An ErrorResponse or NoticeResponse (the whole message, `buf[start, end)`) with its position
 * field (`P`, a 1-based character offset into the query text) moved back by `by` characters,
 * for a text Postgres got with a deferred BEGIN in front. A position that would fall inside that
 * BEGIN is left out. Returns a new message; the other fields are copied as they are.
 */
export function shiftPosition(buf: Uint8Array, start: number, end: number, by: number): Uint8Array {
  const out = new Uint8Array(end - start);
  out[0] = buf[start]!;
  let o = 5;
  let i = start + 5;
  while (i < end && buf[i] !== 0) {
    let j = i + 1;
    while (j < end && buf[j] !== 0) j++;
    if (buf[i] === 0x50) { // 'P'
      let pos = 0;
      for (let k = i + 1; k < j; k++) pos = pos * 10 + (buf[k]! - 0x30);
      pos -= by;
      if (pos >= 1) {
        out[o++] = 0x50;
        for (const d of String(pos)) out[o++] = d.charCodeAt(0);
        out[o++] = 0;
      }
    } else {
      out.set(buf.subarray(i, Math.min(j + 1, end)), o);
      o += Math.min(j + 1, end) - i;
    }
    i = j + 1;
  }
  out[o++] = 0;
  new DataView(out.buffer).setInt32(1, o - 1);
  return out.subarray(0, o);
}
