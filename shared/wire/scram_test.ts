import { TesseraError } from "../errors/mod.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertThrows,
} from "../testing/assert.ts";
import {
  createScramVerifier,
  formatScramVerifier,
  fromBase64,
  isScramVerifier,
  parseScramVerifier,
  saslPrep,
  ScramClient,
  ScramServer,
  toBase64,
} from "./scram.ts";

// RFC 7677 section 3: user "user", password "pencil".
const RFC = {
  password: "pencil",
  clientNonce: "rOprNGfwEbeRWgbNEkqO",
  serverNonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
  salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
  clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
  serverFirst:
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
  clientFinal:
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
  serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

async function rfcVerifier(): Promise<string> {
  return await createScramVerifier(RFC.password, { salt: fromBase64(RFC.salt)!, iterations: 4096 });
}

Deno.test("ScramClient reproduces the RFC 7677 test vector", async () => {
  const client = new ScramClient(RFC.password, { username: "user", nonce: RFC.clientNonce });
  assertEquals(client.clientFirstMessage(), RFC.clientFirst);
  assertEquals(await client.clientFinalMessage(RFC.serverFirst), RFC.clientFinal);
  assertEquals(client.verified, false);
  client.verifyServerFinal(RFC.serverFinal);
  assertEquals(client.verified, true);
});

Deno.test("ScramServer reproduces the RFC 7677 test vector from a stored verifier", async () => {
  const server = new ScramServer(await rfcVerifier(), { nonce: RFC.serverNonce, username: "user" });
  assertEquals(await server.serverFirstMessage(RFC.clientFirst), RFC.serverFirst);
  assertEquals(await server.serverFinalMessage(RFC.clientFinal), RFC.serverFinal);
  assertEquals(server.verified, true);
});

Deno.test("ScramClient and ScramServer agree with random nonces and salts", async () => {
  const verifier = await createScramVerifier("correct horse");
  assertMatch(
    verifier,
    /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$/,
  );
  const client = new ScramClient("correct horse");
  const server = new ScramServer(verifier, { username: "alice" });
  const serverFirst = await server.serverFirstMessage(
    new TextEncoder().encode(client.clientFirstMessage()),
  );
  const serverFinal = await server.serverFinalMessage(await client.clientFinalMessage(serverFirst));
  client.verifyServerFinal(serverFinal);
  assert(client.verified && server.verified);
});

Deno.test("a wrong password fails with 28P01 naming the user", async () => {
  const client = new ScramClient("wrong");
  const server = new ScramServer(await createScramVerifier("right"), { username: "alice" });
  const serverFirst = await server.serverFirstMessage(client.clientFirstMessage());
  const final = await client.clientFinalMessage(serverFirst);
  const err = await assertRejects(
    () => server.serverFinalMessage(final),
    TesseraError,
    'password authentication failed for user "alice"',
  );
  assertEquals(err.code, "28P01");
  assertEquals(err.severity, "FATAL");
  assertEquals(server.verified, false);
});

Deno.test("an unknown user runs the exchange with a stable mock salt and fails with 28P01", async () => {
  const secret = new Uint8Array(32).fill(7);
  const salts: string[] = [];
  for (let i = 0; i < 2; i++) {
    const client = new ScramClient("anything");
    const server = new ScramServer(undefined, { username: "ghost", mockSecret: secret });
    const serverFirst = await server.serverFirstMessage(client.clientFirstMessage());
    salts.push(/,s=([^,]+),/.exec(serverFirst)![1]!);
    assertMatch(serverFirst, /,i=4096$/);
    const final = await client.clientFinalMessage(serverFirst);
    assertEquals(
      (await assertRejects(() => server.serverFinalMessage(final), TesseraError)).code,
      "28P01",
    );
  }
  assertEquals(salts[0], salts[1]);
  const other = new ScramServer(undefined, { username: "other", mockSecret: secret });
  const otherFirst = await other.serverFirstMessage(new ScramClient("x").clientFirstMessage());
  assert(!otherFirst.includes(`s=${salts[0]},`), "different users get different mock salts");
});

Deno.test("ScramServer refuses channel binding it was not asked to do (p= without -PLUS)", async () => {
  const server = new ScramServer(await rfcVerifier());
  const err = await assertRejects(
    () => server.serverFirstMessage("p=tls-server-end-point,,n=,r=abc"),
    TesseraError,
    "malformed SCRAM message",
  );
  assertEquals(err.code, "08P01");
  assert(err.detail?.includes("asks for channel binding"), err.detail);
});

Deno.test("SCRAM-SHA-256-PLUS: the proof is bound to the connection's channel binding data", async () => {
  const verifier = await rfcVerifier();
  const endPoint = crypto.getRandomValues(new Uint8Array(32));
  // The same data on both sides: accepted, and the client-final carries it.
  const client = new ScramClient(RFC.password, { channelBinding: endPoint });
  const server = new ScramServer(verifier, { channelBinding: endPoint, plus: true });
  const first = client.clientFirstMessage();
  assert(first.startsWith("p=tls-server-end-point,,n=,r="), first);
  const final = await client.clientFinalMessage(await server.serverFirstMessage(first));
  const c = fromBase64(final.slice(2, final.indexOf(",")))!;
  assertEquals(c.subarray(c.length - 32), endPoint);
  client.verifyServerFinal(await server.serverFinalMessage(final));
  assert(client.verified);

  // Other data (another certificate: a man in the middle) fails the check.
  const other = new ScramClient(RFC.password, { channelBinding: new Uint8Array(32) });
  const server2 = new ScramServer(verifier, { channelBinding: endPoint, plus: true });
  const final2 = await other.clientFinalMessage(
    await server2.serverFirstMessage(other.clientFirstMessage()),
  );
  const err = await assertRejects(
    () => server2.serverFinalMessage(final2),
    TesseraError,
    "SCRAM channel binding check failed",
  );
  assertEquals(err.code, "08P01");

  // -PLUS chosen, but no binding asked in the message; an unknown binding type.
  for (const msg of ["n,,n=,r=abc", "y,,n=,r=abc", "p=tls-unique,,n=,r=abc"]) {
    const s = new ScramServer(verifier, { channelBinding: endPoint, plus: true });
    await assertRejects(() => s.serverFirstMessage(msg), TesseraError, "malformed SCRAM message");
  }
  assertThrows(() => new ScramServer(verifier, { plus: true }), RangeError);
});

Deno.test("SCRAM-SHA-256 with flag y where the server offered -PLUS is a downgrade, refused", async () => {
  const verifier = await rfcVerifier();
  const endPoint = new Uint8Array(32);
  const s = new ScramServer(verifier, { channelBinding: endPoint });
  const err = await assertRejects(
    () => s.serverFirstMessage("y,,n=,r=abc"),
    TesseraError,
    "SCRAM channel binding negotiation error",
  );
  assertEquals(err.code, "08P01");
  // Flag y where nothing was offered (plaintext), and flag n over TLS, are fine.
  await new ScramServer(verifier).serverFirstMessage("y,,n=,r=abc");
  const plain = new ScramClient(RFC.password);
  const overTls = new ScramServer(verifier, { channelBinding: endPoint });
  const final = await plain.clientFinalMessage(
    await overTls.serverFirstMessage(plain.clientFirstMessage()),
  );
  plain.verifyServerFinal(await overTls.serverFinalMessage(final));
});

async function hmacSha256(
  key: Uint8Array,
  data: string | Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  const k = await crypto.subtle.importKey(
    "raw",
    key as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, bytes as Uint8Array<ArrayBuffer>));
}

/** A client proof computed from the verifier's inputs, independently of ScramClient. */
async function proofFor(
  password: string,
  serverFirst: string,
  clientFirstBare: string,
  withoutProof: string,
) {
  const attrs = Object.fromEntries(serverFirst.split(",").map((a) => [a[0], a.slice(2)]));
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(password),
    "PBKDF2",
    false,
    ["deriveBits"],
  );
  const salted = new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "PBKDF2", hash: "SHA-256", salt: fromBase64(attrs.s!)!, iterations: Number(attrs.i) },
      key,
      256,
    ),
  );
  const clientKey = await hmacSha256(salted, "Client Key");
  const storedKey = new Uint8Array(await crypto.subtle.digest("SHA-256", clientKey));
  const signature = await hmacSha256(
    storedKey,
    `${clientFirstBare},${serverFirst},${withoutProof}`,
  );
  return toBase64(clientKey.map((b, i) => b ^ signature[i]!));
}

Deno.test("ScramServer accepts the 'y' flag (client supports binding, server offers none)", async () => {
  const verifier = await createScramVerifier("pw");
  const server = new ScramServer(verifier);
  const serverFirst = await server.serverFirstMessage("y,,n=,r=clientnonce");
  const nonce = /^r=([^,]+)/.exec(serverFirst)![1]!;
  // c= carries base64("y,,") = "eSws".
  const withoutProof = `c=eSws,r=${nonce}`;
  const proof = await proofFor("pw", serverFirst, "n=,r=clientnonce", withoutProof);
  assertMatch(await server.serverFinalMessage(`${withoutProof},p=${proof}`), /^v=/);
  assert(server.verified);

  const server2 = new ScramServer(verifier);
  const first2 = await server2.serverFirstMessage("y,,n=,r=clientnonce");
  const nonce2 = /^r=([^,]+)/.exec(first2)![1]!;
  const biws = `c=biws,r=${nonce2}`;
  const wrongBinding = `${biws},p=${await proofFor("pw", first2, "n=,r=clientnonce", biws)}`;
  const err = await assertRejects(() => server2.serverFinalMessage(wrongBinding), TesseraError);
  assertEquals(err.code, "08P01");
  assertEquals(err.detail?.includes("channel binding data does not match"), true);
});

Deno.test("ScramServer rejects malformed client messages with 08P01", async () => {
  const verifier = await rfcVerifier();
  const firsts = [
    "",
    "n,",
    "x,,n=,r=abc",
    "n,,r=abc",
    "n,,n=,r=",
    "n,,m=ext,n=,r=abc",
    "n,,n=user",
    "n,,garbage",
  ];
  for (const first of firsts) {
    const err = await assertRejects(
      () => new ScramServer(verifier).serverFirstMessage(first),
      TesseraError,
    );
    assertEquals(err.code, "08P01", first);
  }
  const authz = await assertRejects(
    () => new ScramServer(verifier).serverFirstMessage("n,a=admin,n=,r=abc"),
    TesseraError,
  );
  assertEquals(authz.code, "0A000");

  const finals = [
    "c=biws,r=nonce", // no proof
    `c=biws,r=${RFC.clientNonce}x,p=${RFC.clientFinal.split("p=")[1]}`, // nonce mismatch
    `c=biws,r=${RFC.clientNonce}${RFC.serverNonce},p=!!!`, // bad proof encoding
    `c=biws,r=${RFC.clientNonce}${RFC.serverNonce},p=AAAA`, // proof too short
    `r=${RFC.clientNonce}${RFC.serverNonce},c=biws,p=AAAA`, // attribute order
  ];
  for (const final of finals) {
    const server = new ScramServer(verifier, { nonce: RFC.serverNonce });
    await server.serverFirstMessage(RFC.clientFirst);
    const err = await assertRejects(() => server.serverFinalMessage(final), TesseraError);
    assertEquals(err.code, "08P01", final);
  }
  const early = await assertRejects(
    () => new ScramServer(verifier).serverFinalMessage(RFC.clientFinal),
    TesseraError,
  );
  assertEquals(early.code, "08P01");
});

Deno.test("ScramClient rejects a bad server: wrong nonce, bad salt, wrong signature", async () => {
  const client = () => new ScramClient(RFC.password, { username: "user", nonce: RFC.clientNonce });
  const badFirsts = [
    "r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    `r=${RFC.clientNonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`, // nonce not extended
    `r=${RFC.clientNonce}x,s=***,i=4096`,
    `r=${RFC.clientNonce}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0`,
    `r=${RFC.clientNonce}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=12abc`,
    `m=x,r=${RFC.clientNonce}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1`,
  ];
  for (const first of badFirsts) {
    const err = await assertRejects(() => client().clientFinalMessage(first), TesseraError);
    assertEquals(err.code, "08P01", first);
  }
  const c = client();
  await c.clientFinalMessage(RFC.serverFirst);
  const forged = assertThrows(
    () => c.verifyServerFinal("v=" + toBase64(new Uint8Array(32))),
    TesseraError,
    "does not know the password",
  );
  assertEquals(forged.code, "28000");
  assertEquals(
    assertThrows(() => c.verifyServerFinal("e=invalid-proof"), TesseraError).code,
    "28P01",
  );
  assertEquals(
    assertThrows(() => client().verifyServerFinal(RFC.serverFinal), TesseraError).code,
    "08P01",
  );
});

Deno.test("verifiers round-trip through parse and format; malformed ones are 22023", async () => {
  const text = await rfcVerifier();
  assert(isScramVerifier(text));
  assert(!isScramVerifier("md5abc"));
  const v = parseScramVerifier(text);
  assertEquals(v.iterations, 4096);
  assertEquals(toBase64(v.salt), RFC.salt);
  assertEquals(formatScramVerifier(v), text);
  const bad = [
    "pencil",
    "SCRAM-SHA-256$4096:salt",
    "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$" + text.split("$")[2],
    "SCRAM-SHA-256$4096:***$" + text.split("$")[2],
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
  ];
  for (const b of bad) {
    const err = assertThrows(
      () => parseScramVerifier(b),
      TesseraError,
      "invalid SCRAM-SHA-256 verifier",
    );
    assertEquals(err.code, "22023");
    assert(
      !err.message.includes("W22ZaJ0SNY7soEsUEjb6gQ=="),
      "the message does not repeat the verifier",
    );
  }
  await assertRejects(() => createScramVerifier("x", { iterations: 0 }), RangeError);
});

Deno.test("the RFC 7677 credentials give the verifier text Postgres would store", async () => {
  // StoredKey and ServerKey computed independently (Python hashlib) for "pencil", the RFC's
  // salt and 4096 iterations, in the pg_authid format.
  const expected = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" +
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
  assertEquals(await rfcVerifier(), expected);
});

Deno.test("saslPrep keeps ASCII, maps spaces, drops ignorables, applies NFKC", () => {
  assertEquals(saslPrep("pencil"), "pencil");
  assertEquals(saslPrep("a\u0001b"), "a\u0001b", "ASCII is used as is, as Postgres does");
  assertEquals(saslPrep("I\u00ADX"), "IX");
  assertEquals(saslPrep("user\u00A0name\u00AA"), "user namea");
  assertEquals(saslPrep("\u2168"), "IX");
  assertEquals(saslPrep("e\u0301t\u00E9"), "\u00E9t\u00E9");
  // Prohibited output or a bidi violation: the password is used unchanged.
  assertEquals(saslPrep("\u00E9\u0007"), "\u00E9\u0007");
  assertEquals(saslPrep("\u00E9\uE000"), "\u00E9\uE000");
  assertEquals(saslPrep("\u05D0a"), "\u05D0a");
  assertEquals(saslPrep("\u05D0\u05D1"), "\u05D0\u05D1");
});

Deno.test("non-ASCII passwords log in when client and server normalize alike", async () => {
  const verifier = await createScramVerifier("p\u00E4ssw\u00F6rd\u2168");
  const client = new ScramClient("pa\u0308ssw\u00F6rdIX");
  const server = new ScramServer(verifier);
  const first = await server.serverFirstMessage(client.clientFirstMessage());
  client.verifyServerFinal(await server.serverFinalMessage(await client.clientFinalMessage(first)));
  assert(server.verified);
});
