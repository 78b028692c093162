/**
 * Values as the engine sees them (text form from the shards) and the arithmetic it does on them:
 * ordering by column type (for merges, sorts, MIN/MAX and HAVING), exact decimal sums, and
 * `avg` as Postgres's `numeric` division computes it (same result scale and rounding), so that
 * merged results read exactly as a single Postgres would print them.
 *
 * @module
 */

/** A row of text values (`null` is SQL NULL). */
export type Row = (string | null)[];

/** How values of a column compare. */
export type ValueKind = "int" | "numeric" | "float" | "bool" | "text";

const INT_OIDS = new Set([20, 21, 23, 26, 28, 5069]);
const FLOAT_OIDS = new Set([700, 701]);
/** `numeric` type OID. */
export const NUMERIC_OID = 1700;
/** `float8` type OID. */
export const FLOAT8_OID = 701;
/** `int8` type OID. */
export const INT8_OID = 20;

/** The comparison kind of a column of type `typeOid`. */
export function kindOf(typeOid: number): ValueKind {
  if (INT_OIDS.has(typeOid)) return "int";
  if (typeOid === NUMERIC_OID) return "numeric";
  if (FLOAT_OIDS.has(typeOid)) return "float";
  if (typeOid === 16) return "bool";
  return "text";
}

/** An exact decimal: `unscaled / 10^scale`. */
export interface Decimal {
  unscaled: bigint;
  scale: number;
}

const DECIMAL = /^\s*([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?\s*$/;

/** Parses a decimal text (as Postgres prints numeric and integers); undefined when it is not one. */
export function parseDecimal(text: string): Decimal | undefined {
  const m = DECIMAL.exec(text);
  if (m === null) return undefined;
  const [, sign, int = "", frac = "", exp] = m;
  if (int === "" && frac === "") return undefined;
  let unscaled = BigInt((int || "0") + frac);
  let scale = frac.length;
  if (exp !== undefined) {
    const e = Number(exp);
    if (e >= scale) {
      unscaled *= 10n ** BigInt(e - scale);
      scale = 0;
    } else scale -= e;
  }
  return { unscaled: sign === "-" ? -unscaled : unscaled, scale };
}

/** Prints a decimal with exactly its scale. */
export function formatDecimal(d: Decimal): string {
  const neg = d.unscaled < 0n;
  let digits = (neg ? -d.unscaled : d.unscaled).toString();
  if (d.scale === 0) return (neg ? "-" : "") + digits;
  if (digits.length <= d.scale) digits = "0".repeat(d.scale - digits.length + 1) + digits;
  const cut = digits.length - d.scale;
  return `${neg ? "-" : ""}${digits.slice(0, cut)}.${digits.slice(cut)}`;
}

function rescale(d: Decimal, scale: number): bigint {
  return d.unscaled * 10n ** BigInt(scale - d.scale);
}

/** Compares two decimals. */
export function compareDecimal(a: Decimal, b: Decimal): number {
  const s = Math.max(a.scale, b.scale);
  const x = rescale(a, s);
  const y = rescale(b, s);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Adds two decimals (result scale: the larger). */
export function addDecimal(a: Decimal, b: Decimal): Decimal {
  const s = Math.max(a.scale, b.scale);
  return { unscaled: rescale(a, s) + rescale(b, s), scale: s };
}

/** Rank of the special values Postgres sorts: numeric NaN above every number, ±Infinity. */
function special(text: string): number | undefined {
  switch (text) {
    case "NaN":
      return 2;
    case "Infinity":
      return 1;
    case "-Infinity":
      return -1;
  }
  return undefined;
}

function compareNumericText(a: string, b: string): number {
  const sa = special(a);
  const sb = special(b);
  if (sa !== undefined || sb !== undefined) {
    const x = sa ?? 0;
    const y = sb ?? 0;
    if (x !== y) return x < y ? -1 : 1;
    if (sa !== undefined) return 0;
  }
  const da = parseDecimal(a);
  const db = parseDecimal(b);
  if (da === undefined || db === undefined) return compareText(a, b);
  return compareDecimal(da, db);
}

function compareFloatText(a: string, b: string): number {
  const x = Number(a);
  const y = Number(b);
  // Postgres sorts NaN above every other float.
  if (Number.isNaN(x) || Number.isNaN(y)) {
    return Number.isNaN(x) ? (Number.isNaN(y) ? 0 : 1) : -1;
  }
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Compares by Unicode code point (the order of the `C` collation on UTF-8). */
export function compareText(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return a.length < b.length ? -1 : a.length > b.length ? 1 : 0;
}

/** Compares two non-NULL values of kind `kind`. */
export function compareValues(a: string, b: string, kind: ValueKind): number {
  switch (kind) {
    case "int":
    case "numeric":
      return compareNumericText(a, b);
    case "float":
      return compareFloatText(a, b);
    case "bool":
      return a === b ? 0 : a === "f" ? -1 : 1;
    case "text":
      return compareText(a, b);
  }
}

/** Whether `text` reads as a number (for HAVING comparisons against literals). */
export function isNumber(text: string): boolean {
  return special(text) !== undefined || parseDecimal(text) !== undefined;
}

/** Sum of partial sums of kind `kind` (NULLs ignored; NULL when all are NULL). */
export function sumValues(values: readonly (string | null)[], kind: ValueKind): string | null {
  let seen = false;
  if (kind === "float") {
    let total = 0;
    for (const v of values) {
      if (v === null) continue;
      seen = true;
      total += Number(v);
    }
    return seen ? formatFloat(total) : null;
  }
  let total: Decimal = { unscaled: 0n, scale: 0 };
  let nan = false;
  for (const v of values) {
    if (v === null) continue;
    seen = true;
    if (v === "NaN") {
      nan = true;
      continue;
    }
    const d = parseDecimal(v);
    if (d === undefined) return v; // not a number: leave it as the shard printed it
    total = addDecimal(total, d);
  }
  if (!seen) return null;
  return nan ? "NaN" : formatDecimal(total);
}

/** Prints a float8 as Postgres does by default (shortest round-trip form). */
export function formatFloat(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "Infinity";
  if (x === -Infinity) return "-Infinity";
  if (Object.is(x, -0)) return "-0";
  const abs = Math.abs(x);
  if (abs !== 0 && (abs >= 1e15 || abs < 1e-4)) {
    // Postgres uses exponent form like 1e+15 and 1e-05.
    const [m, e] = x.toExponential().split("e");
    const exp = Number(e);
    const sign = exp < 0 ? "-" : "+";
    return `${m}e${sign}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  return String(x);
}

/** Weight (in base-10000 digits) and first base-10000 digit of |d|, as Postgres's numeric stores it. */
function weightOf(d: Decimal): { weight: number; first: number } {
  const abs = d.unscaled < 0n ? -d.unscaled : d.unscaled;
  if (abs === 0n) return { weight: 0, first: 0 };
  const digits = abs.toString();
  const intLen = digits.length - d.scale;
  if (intLen > 0) {
    const weight = Math.floor((intLen - 1) / 4);
    const lead = intLen - weight * 4;
    return { weight, first: Number(digits.slice(0, lead)) };
  }
  // Only a fraction: leading zeros after the decimal point.
  const zeros = -intLen;
  const group = Math.floor(zeros / 4);
  const frac = "0".repeat(zeros) + digits;
  const first = Number(frac.slice(group * 4, group * 4 + 4).padEnd(4, "0"));
  return { weight: -(group + 1), first };
}

/**
 * `a / b` as Postgres's `numeric` division: result scale from `select_div_scale` (at least 16
 * significant digits, at least either input's scale, at most 1000), rounded half away from zero.
 * Undefined when `b` is zero.
 */
export function divideDecimal(a: Decimal, b: Decimal): Decimal | undefined {
  if (b.unscaled === 0n) return undefined;
  const wa = weightOf(a);
  const wb = weightOf(b);
  let qweight = wa.weight - wb.weight;
  if (wa.first <= wb.first) qweight--;
  let rscale = 16 - qweight * 4;
  rscale = Math.min(1000, Math.max(rscale, a.scale, b.scale, 0));
  // a/b * 10^rscale = a.unscaled * 10^(rscale - a.scale + b.scale) / b.unscaled
  let num = a.unscaled;
  let den = b.unscaled;
  const shift = rscale - a.scale + b.scale;
  if (shift >= 0) num *= 10n ** BigInt(shift);
  else den *= 10n ** BigInt(-shift);
  if (den < 0n) {
    num = -num;
    den = -den;
  }
  const neg = num < 0n;
  const absNum = neg ? -num : num;
  let q = absNum / den;
  if ((absNum % den) * 2n >= den) q++;
  return { unscaled: neg ? -q : q, scale: rscale };
}

/**
 * `avg` from a partial sum and count: numeric as Postgres prints `avg` over integers and
 * numerics, float8 over floats, NULL when the count is 0.
 */
export function averageOf(
  sum: string | null,
  count: string | null,
  kind: ValueKind,
): string | null {
  if (sum === null || count === null || count === "0") return null;
  if (kind === "float") return formatFloat(Number(sum) / Number(count));
  if (sum === "NaN") return "NaN";
  const s = parseDecimal(sum);
  const c = parseDecimal(count);
  if (s === undefined || c === undefined) return null;
  const q = divideDecimal(s, c);
  return q === undefined ? null : formatDecimal(q);
}
