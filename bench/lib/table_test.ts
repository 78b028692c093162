import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { fixed, formatMarkdownTable, formatTable, ratio } from "./table.ts";

const table = {
  headers: ["target", "TPS", "vs PgBouncer"],
  rows: [
    ["direct", "61234", "1.41×"],
    ["pgbouncer", "43300", "1.00×"],
    ["tessera", "–", "–"],
  ],
};

Deno.test("formatTable pads text left and numbers right", () => {
  assertEquals(
    formatTable(table),
    [
      "target       TPS  vs PgBouncer",
      "---------  -----  ------------",
      "direct     61234         1.41×",
      "pgbouncer  43300         1.00×",
      "tessera        –             –",
    ].join("\n"),
  );
});

Deno.test("formatMarkdownTable right-aligns numeric columns", () => {
  assertEquals(
    formatMarkdownTable(table).split("\n").slice(0, 3),
    [
      "| target | TPS | vs PgBouncer |",
      "| --- | ---: | ---: |",
      "| direct | 61234 | 1.41× |",
    ],
  );
});

Deno.test("tables reject rows of the wrong length; fixed and ratio show – for NaN", () => {
  assertThrows(
    () => formatTable({ headers: ["a", "b"], rows: [["1"]] }),
    RangeError,
    "row 0 has 1 cells but the table has 2 columns",
  );
  assertEquals(fixed(1.23456, 2), "1.23");
  assertEquals(fixed(Number.NaN, 2), "–");
  assertEquals(ratio(43300 / 38800), "1.12×");
  assertEquals(ratio(1 / 0), "–");
});
