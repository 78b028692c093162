import { assertEquals } from "../testing/assert.ts";
import { md5PasswordResponse, md5SaltedResponse, md5StoredPassword } from "./md5.ts";

// Expected values computed independently with Python's hashlib.
Deno.test("md5StoredPassword is md5 of password then user, in hex", () => {
  assertEquals(md5StoredPassword("alice", "secret"), "md54a0a68b43b6cd5cf266fa02f196e2371");
});

Deno.test("md5PasswordResponse salts the stored hash; a server gets the same from the stored form", () => {
  const salt = Uint8Array.of(1, 2, 3, 4);
  const expected = "md598a0412b9c31436fc53776e863350083";
  assertEquals(md5PasswordResponse("alice", "secret", salt), expected);
  assertEquals(md5SaltedResponse("md54a0a68b43b6cd5cf266fa02f196e2371", salt), expected);
  assertEquals(
    md5PasswordResponse("alice", "secret", Uint8Array.of(1, 2, 3, 5)) === expected,
    false,
  );
});
