import { assertEquals, assertMatch, assertThrows } from "../testing/assert.ts";
import { TesseraError } from "../errors/mod.ts";
import { debianBindirs, findEtcd, findPgBindir, pgVersion } from "./mod.ts";

function fakeBindir(root: string, names: string[]): string {
  Deno.mkdirSync(root, { recursive: true });
  for (const name of names) {
    Deno.writeTextFileSync(`${root}/${name}`, "#!/bin/sh\n");
    Deno.chmodSync(`${root}/${name}`, 0o755);
  }
  return root;
}

const ALL = ["postgres", "pg_ctl", "initdb", "pg_controldata"];

Deno.test("findPgBindir prefers the explicit dir, then PG_BINDIR, then PATH, then newest Debian", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const explicit = fakeBindir(`${tmp}/explicit`, ALL);
    const fromEnv = fakeBindir(`${tmp}/env`, ALL);
    const onPath = fakeBindir(`${tmp}/path`, ALL);
    fakeBindir(`${tmp}/debian/13/bin`, ALL);
    fakeBindir(`${tmp}/debian/9.6/bin`, ALL);
    const newest = fakeBindir(`${tmp}/debian/16/bin`, ALL);
    fakeBindir(`${tmp}/debian/17/bin`, ["postgres"]); // incomplete: skipped
    const debianRoot = `${tmp}/debian`;

    assertEquals(
      findPgBindir({ bindir: explicit, env: { PG_BINDIR: fromEnv }, debianRoot }),
      explicit,
    );
    assertEquals(findPgBindir({ env: { PG_BINDIR: fromEnv, PATH: onPath }, debianRoot }), fromEnv);
    assertEquals(findPgBindir({ env: { PATH: `/nowhere:${onPath}` }, debianRoot }), onPath);
    assertEquals(findPgBindir({ env: { PATH: "/nowhere" }, debianRoot }), newest);
    assertEquals(debianBindirs(debianRoot).map((d) => d.slice(debianRoot.length)), [
      "/17/bin",
      "/16/bin",
      "/13/bin",
      "/9.6/bin",
    ]);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("findPgBindir names the Debian package when nothing is found", () => {
  const err = assertThrows(
    () => findPgBindir({ env: { PATH: "/nowhere" }, debianRoot: "/nowhere" }),
    TesseraError,
  );
  assertMatch(err.hint ?? "", /apt-get install postgresql-15/);
  assertThrows(
    () => findPgBindir({ bindir: "/nowhere", env: {} }),
    TesseraError,
    "'/nowhere'",
  );
});

Deno.test("findEtcd uses ETCD_BIN, then PATH, and names etcd-server when missing", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const dir = fakeBindir(`${tmp}/bin`, ["etcd"]);
    assertEquals(findEtcd({ env: { PATH: `/nowhere:${dir}` } }), `${dir}/etcd`);
    assertEquals(findEtcd({ env: { ETCD_BIN: `${dir}/etcd` } }), `${dir}/etcd`);
    const err = assertThrows(() => findEtcd({ env: { ETCD_BIN: `${tmp}/none` } }), TesseraError);
    assertMatch(err.hint ?? "", /etcd-server/);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("pgVersion reads the installed server's version", async () => {
  const version = await pgVersion(findPgBindir());
  assertMatch(version, /^\d+\.\d+$/);
});
