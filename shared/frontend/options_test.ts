import { TesseraError } from "../errors/mod.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { parseStartupOptions, splitStartupOptions } from "./options.ts";

Deno.test("splitStartupOptions splits on white space and honours backslash escapes", () => {
  assertEquals(splitStartupOptions(""), []);
  assertEquals(splitStartupOptions("   \t\n "), []);
  assertEquals(splitStartupOptions("-c a=b  --c=d"), ["-c", "a=b", "--c=d"]);
  assertEquals(splitStartupOptions("-c search_path=a\\ b"), ["-c", "search_path=a b"]);
  assertEquals(splitStartupOptions("-c x=back\\\\slash"), ["-c", "x=back\\slash"]);
  assertEquals(splitStartupOptions("\t-c\ta=1\r\n-c\vb=2\f"), ["-c", "a=1", "-c", "b=2"]);
  // A trailing lone backslash escapes nothing and is dropped, as in pg_split_opts.
  assertEquals(splitStartupOptions("-c a=b\\"), ["-c", "a=b"]);
});

Deno.test("parseStartupOptions reads -c name=value, -cname=value and --name=value", () => {
  assertEquals(parseStartupOptions(""), {});
  assertEquals(
    parseStartupOptions(
      "-c search_path=app\\ schema,public -cstatement_timeout=5s --work-mem=64MB --DateStyle=ISO",
    ),
    {
      search_path: "app schema,public",
      statement_timeout: "5s",
      work_mem: "64MB",
      DateStyle: "ISO",
    },
  );
  // Values keep '=' after the first and may be empty; a later setting wins.
  assertEquals(parseStartupOptions("-c a=x=y -c b= -c a=z"), { a: "z", b: "" });
  // A name that is special in JavaScript is an ordinary setting.
  const odd = parseStartupOptions("-c __proto__=1");
  assertEquals(Object.keys(odd), ["__proto__"]);
  assertEquals(Object.getOwnPropertyDescriptor(odd, "__proto__")?.value, "1");
});

Deno.test("parseStartupOptions refuses malformed options with FATAL 42601 or 0A000", () => {
  const cases: [string, string, string][] = [
    ["-c", "42601", "option requires an argument: -c"],
    ["-c search_path", "42601", "-c search_path requires a value"],
    ["--work-mem", "42601", "--work-mem requires a value"],
    ["--", "42601", "invalid option in startup packet: '--'"],
    ["-c =1", "42601", "invalid option in startup packet: '-c =1'"],
    ["stray", "42601", "invalid command-line argument for server process: 'stray'"],
    ["-B 100", "0A000", "unsupported option in startup packet: '-B'"],
  ];
  for (const [options, code, message] of cases) {
    const err = assertThrows(() => parseStartupOptions(options), TesseraError);
    assertEquals([err.code, err.severity, err.message], [code, "FATAL", message], options);
  }
});
