/**
 * Loading the TLS files, and the TLS connection the front end hands out, driven by Deno's own
 * TLS client (rustls) over real TCP. Ports 12813-12819.
 */

import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { MessageWriter } from "../wire/mod.ts";
import { acceptFrontend } from "./accept.ts";
import { loadFrontendTls, TlsServerConn, tlsServerEndPoint } from "./tls.ts";
import { makeTestCerts, type TestCerts } from "./test_server.ts";

const certs: TestCerts = await makeTestCerts();

Deno.test("loadFrontendTls reads and checks the files once", () => {
  const loaded = loadFrontendTls({ certFile: certs.certFile, keyFile: certs.keyFile });
  assertEquals(loaded.loaded, true);
  assertEquals(loaded.subject, "CN=localhost");
  assert(loaded.subjectAltName?.includes("DNS:localhost"), loaded.subjectAltName);
  assert(loaded.notAfter.getTime() > Date.now());
  assert(loadFrontendTls(loaded) === loaded, "a loaded configuration is returned as is");
});

/** A self-signed certificate made by openssl with `args` (its key type and digest), as DER. */
async function selfSigned(args: string[]): Promise<Uint8Array> {
  const dir = certs.dir;
  const run = async (a: string[]) => {
    const out = await new Deno.Command("openssl", { args: a, cwd: dir, stderr: "piped" }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
  };
  await run([
    "req",
    "-x509",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=cb",
    ...args,
    "-keyout",
    "cb.key",
    "-out",
    "cb.pem",
  ]);
  await run(["x509", "-in", "cb.pem", "-outform", "DER", "-out", "cb.der"]);
  return await Deno.readFile(`${dir}/cb.der`);
}

async function digest(alg: string, der: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest(alg, der as Uint8Array<ArrayBuffer>));
}

Deno.test("tlsServerEndPoint hashes the certificate with its signature's hash (RFC 5929)", async () => {
  // RSA with SHA-256 (the test certificates), ECDSA with SHA-384, RSA with SHA-512.
  const loaded = loadFrontendTls({ certFile: certs.certFile, keyFile: certs.keyFile });
  const rsa256 = await selfSigned(["-newkey", "rsa:2048", "-sha256"]);
  assertEquals(tlsServerEndPoint(rsa256), await digest("SHA-256", rsa256));
  const pem = Deno.readTextFileSync(certs.certFile).split("-----END CERTIFICATE-----")[0]!;
  const der = Uint8Array.from(
    atob(pem.replace(/-----BEGIN CERTIFICATE-----|\s/g, "")),
    (c) => c.charCodeAt(0),
  );
  assertEquals(loaded.endPoint, await digest("SHA-256", der));
  const ec384 = await selfSigned([
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-384",
    "-sha384",
  ]);
  assertEquals(tlsServerEndPoint(ec384), await digest("SHA-384", ec384));
  const rsa512 = await selfSigned(["-newkey", "rsa:2048", "-sha512"]);
  assertEquals(tlsServerEndPoint(rsa512), await digest("SHA-512", rsa512));
  // SHA-1 is replaced by SHA-256.
  const rsa1 = await selfSigned(["-newkey", "rsa:2048", "-sha1"]);
  assertEquals(tlsServerEndPoint(rsa1), await digest("SHA-256", rsa1));
  // Ed25519 names no hash: no channel binding. Garbage is no certificate.
  assertEquals(tlsServerEndPoint(await selfSigned(["-newkey", "ed25519"])), undefined);
  assertEquals(tlsServerEndPoint(new Uint8Array([0x30, 0x82, 0xff])), undefined);
});

Deno.test("loadFrontendTls fails with the file and the reason", () => {
  const dir = certs.dir;
  Deno.writeTextFileSync(`${dir}/garbage.pem`, "not a certificate\n");
  Deno.writeTextFileSync(
    `${dir}/broken.pem`,
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
  );
  const cases: [string, string, string][] = [
    [
      `${dir}/missing.pem`,
      certs.keyFile,
      `TLS certificate file '${dir}/missing.pem' cannot be read`,
    ],
    [certs.certFile, `${dir}/missing.key`, `TLS key file '${dir}/missing.key' cannot be read`],
    [
      `${dir}/garbage.pem`,
      certs.keyFile,
      `TLS certificate file '${dir}/garbage.pem' holds no PEM certificate`,
    ],
    [
      certs.certFile,
      `${dir}/garbage.pem`,
      `TLS key file '${dir}/garbage.pem' holds no PEM private key`,
    ],
    [
      `${dir}/broken.pem`,
      certs.keyFile,
      `TLS certificate file '${dir}/broken.pem' cannot be parsed`,
    ],
    [
      certs.certFile,
      certs.otherKeyFile,
      `TLS key file '${certs.otherKeyFile}' does not match the certificate in '${certs.certFile}'`,
    ],
  ];
  for (const [certFile, keyFile, message] of cases) {
    assertThrows(() => loadFrontendTls({ certFile, keyFile }), Error, message);
  }
});

Deno.test("the TLS connection carries large data both ways, in order, and reports the end", async () => {
  const tls = loadFrontendTls({ certFile: certs.certFile, keyFile: certs.keyFile });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 12813 });
  // 1 MiB of pseudo-random bytes: many TLS records, some reads larger than a record.
  const data = new Uint8Array(1 << 20);
  for (let i = 0; i < data.byteLength; i += 65536) {
    crypto.getRandomValues(data.subarray(i, i + 65536));
  }
  const server = (async () => {
    const raw = await listener.accept();
    const result = await acceptFrontend(raw, {
      auth: { lookup: () => ({ method: "trust" }) },
      tls,
    });
    assert(result.kind === "startup" && result.tls, "a TLS session");
    const conn = result.conn;
    assert(conn instanceof TlsServerConn);
    // Echo everything back until the client closes its side, then close ours.
    const buf = new Uint8Array(7000);
    let echoed = 0;
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      let done = 0;
      while (done < n) done += await conn.write(buf.subarray(done, n));
      echoed += n;
    }
    await conn.closeWrite();
    conn.close();
    return echoed;
  })();
  try {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: 12813 });
    await tcp.write(new MessageWriter().sslRequest().take());
    const answer = new Uint8Array(1);
    assertEquals(await tcp.read(answer), 1);
    assertEquals(answer[0], 0x53);
    const client = await Deno.startTls(tcp, {
      caCerts: [Deno.readTextFileSync(certs.caFile)],
      hostname: "localhost",
    });
    try {
      await client.write(new MessageWriter().startupMessage({ user: "u" }).take());
      const ok = new Uint8Array(9);
      let got = 0;
      while (got < 9) got += (await client.read(ok.subarray(got)))!;
      assertEquals([...ok], [0x52, 0, 0, 0, 8, 0, 0, 0, 0], "AuthenticationOk over TLS");
      const writer = (async () => {
        for (let i = 0; i < data.byteLength; i += 50000) {
          await client.write(data.subarray(i, Math.min(i + 50000, data.byteLength)));
        }
        await client.closeWrite();
      })();
      const back = new Uint8Array(data.byteLength);
      let n = 0;
      for (;;) {
        const k = await client.read(back.subarray(n));
        if (k === null || n + k === back.byteLength) {
          if (k !== null) n += k;
          break;
        }
        n += k;
      }
      await writer;
      assertEquals(n, data.byteLength);
      assert(back.every((b, i) => b === data[i]), "the echo matches byte for byte");
      assertEquals(await client.read(new Uint8Array(1)), null, "the server's close arrives");
    } finally {
      client.close();
    }
    assertEquals(await server, data.byteLength);
  } finally {
    listener.close();
  }
});

Deno.test("a client that sends garbage instead of a TLS handshake is closed", async () => {
  const tls = loadFrontendTls({ certFile: certs.certFile, keyFile: certs.keyFile });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 12814 });
  try {
    const client = await Deno.connect({ hostname: "127.0.0.1", port: 12814 });
    const raw = await listener.accept();
    const accepted = acceptFrontend(raw, { auth: { lookup: () => undefined }, tls });
    try {
      await client.write(new MessageWriter().sslRequest().take());
      const answer = new Uint8Array(1);
      await client.read(answer);
      assertEquals(answer[0], 0x53);
      await client.write(new MessageWriter().startupMessage({ user: "plaintext" }).take());
      assertEquals(await accepted, { kind: "closed" });
      const rest = new Uint8Array(4096);
      // Whatever TLS alert was sent, the connection then ends.
      while ((await client.read(rest).catch(() => null)) !== null);
    } finally {
      client.close();
    }
  } finally {
    listener.close();
  }
});

Deno.test({
  name: "remove the test certificates",
  fn: async () => {
    await Deno.remove(certs.dir, { recursive: true });
  },
});
