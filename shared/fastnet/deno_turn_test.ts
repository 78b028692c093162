import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { DenoTurn } from "./deno_turn.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name: "deno turn: a turn lets a due timer fire; after close a turn fails",
  ignore: !linux,
  async fn() {
    const turn = await DenoTurn.open();
    if (typeof turn === "string") throw new Error(turn);
    try {
      let fired = false;
      const timer = setTimeout(() => fired = true, 0);
      // Spin past the timer's due time without yielding, then give Deno exactly turns.
      const until = performance.now() + 5;
      while (performance.now() < until) { /* busy */ }
      for (let i = 0; i < 50 && !fired; i++) await turn.turn();
      clearTimeout(timer);
      assert(fired, "the timer did not fire during 50 turns");
      assert(!turn.closed);
    } finally {
      turn.close();
    }
    assert(turn.closed);
    await assertRejects(() => turn.turn());
  },
});

Deno.test({
  name: "deno turn: where no temporary directory can be made, open says why",
  ignore: !linux,
  async fn() {
    const before = Deno.env.get("TMPDIR");
    Deno.env.set("TMPDIR", "/nonexistent/tessera-turn-test");
    try {
      const turn = await DenoTurn.open();
      assertEquals(typeof turn, "string");
      assert((turn as string).length > 0);
    } finally {
      if (before === undefined) Deno.env.delete("TMPDIR");
      else Deno.env.set("TMPDIR", before);
    }
  },
});
