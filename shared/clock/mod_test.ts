import { assert, assertEquals } from "../testing/assert.ts";
import { beginRound, endRound, now } from "./mod.ts";

function spin(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) { /* let the wall clock move */ }
}

Deno.test("clock: outside a round, now() is the system clock", () => {
  const a = Date.now();
  const t = now();
  const b = Date.now();
  assert(a <= t && t <= b, `${a} <= ${t} <= ${b}`);
  spin(3);
  assert(now() >= a + 3);
});

Deno.test("clock: inside a round, now() is the round's one reading", () => {
  const started = beginRound();
  try {
    spin(3);
    assertEquals(now(), started);
    assertEquals(now(), started);
  } finally {
    endRound();
  }
  assert(now() >= started + 3);
});

Deno.test("clock: a new round reads the clock again", () => {
  const first = beginRound();
  endRound();
  spin(2);
  const second = beginRound();
  try {
    assert(second >= first + 2);
    assertEquals(now(), second);
  } finally {
    endRound();
  }
});
