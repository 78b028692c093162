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
