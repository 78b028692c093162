import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { TesseraError } from "../../shared/errors/mod.ts";
import { assertTraversable, lookupOsUser } from "./os_user.ts";

const PASSWD = "root:x:0:0:root:/root:/bin/bash\n" +
  "postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";

Deno.test("lookupOsUser reads uid, gid and home from passwd text", () => {
  assertEquals(lookupOsUser("postgres", PASSWD), {
    name: "postgres",
    uid: 101,
    gid: 104,
    home: "/var/lib/postgresql",
  });
  const err = assertThrows(() => lookupOsUser("nobody-here", PASSWD), TesseraError);
  assertEquals(err.code, "42704");
});

Deno.test("assertTraversable names the directory that blocks the OS user", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.chmodSync(dir, 0o700);
    const stranger = { name: "stranger", uid: 54321, gid: 54321, home: "/" };
    const err = assertThrows(() => assertTraversable(`${dir}/data`, stranger), TesseraError);
    assertEquals(err.message.includes(`'${dir}' has mode 0700`), true);
    Deno.chmodSync(dir, 0o755);
    assertTraversable(`${dir}/data/more`, stranger);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
