import { assertEquals } from "../../shared/testing/assert.ts";
import { nextBackoff } from "./supervisor.ts";

Deno.test("restart backoff doubles from 0.5 s to 5 s and resets after 30 s up", () => {
  const delays: number[] = [];
  let current = 500;
  for (let i = 0; i < 6; i++) {
    const { delay, next } = nextBackoff(current, 1000);
    delays.push(delay);
    current = next;
  }
  assertEquals(delays, [500, 1000, 2000, 4000, 5000, 5000]);
  assertEquals(nextBackoff(5000, 30_000), { delay: 500, next: 1000 });
});
