/**
 * Plain-text tables for benchmark reports: columns padded to their widest cell, numbers
 * right-aligned, text left-aligned, and a Markdown variant for results files.
 *
 * @module
 */

/** A table: a header row and body rows of the same length. */
export interface Table {
  /** Column titles. */
  headers: string[];
  /** Cells, already formatted. */
  rows: string[][];
}

const NUMERIC = /^[-+]?[\d.,]+(?:[×x%]|\s*ms|\s*KB)?$|^[-–]$|^n\/a$/;

function isNumericColumn(table: Table, column: number): boolean {
  const cells = table.rows.map((row) => row[column] ?? "").filter((c) => c !== "");
  return cells.length > 0 && cells.every((cell) => NUMERIC.test(cell));
}

function checkShape(table: Table): void {
  for (const [i, row] of table.rows.entries()) {
    if (row.length !== table.headers.length) {
      throw new RangeError(
        `row ${i} has ${row.length} cells but the table has ${table.headers.length} columns`,
      );
    }
  }
}

/** Renders `table` as aligned text with a dashed rule under the header. */
export function formatTable(table: Table): string {
  checkShape(table);
  const widths = table.headers.map((h, c) =>
    Math.max(h.length, ...table.rows.map((row) => row[c]!.length))
  );
  const numeric = table.headers.map((_, c) => isNumericColumn(table, c));
  const line = (cells: string[]) =>
    cells.map((cell, c) => numeric[c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))
      .join("  ").trimEnd();
  return [
    line(table.headers),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...table.rows.map(line),
  ].join("\n");
}

/** Renders `table` as a Markdown table (numeric columns right-aligned). */
export function formatMarkdownTable(table: Table): string {
  checkShape(table);
  const numeric = table.headers.map((_, c) => isNumericColumn(table, c));
  const row = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [
    row(table.headers),
    row(numeric.map((n) => (n ? "---:" : "---"))),
    ...table.rows.map(row),
  ].join("\n");
}

/** Formats `value` with `digits` decimals, or `–` when it is not a finite number. */
export function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "–";
}

/** Formats a ratio as e.g. `1.05×`, or `–` when it is not a finite number. */
export function ratio(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(2)}×` : "–";
}
