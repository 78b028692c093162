import { assertEquals } from "../../shared/testing/assert.ts";
import { type Ack, firstAckSentAfter, longestAckGap } from "./writers.ts";

const acks: Ack[] = [
  { id: 1, sentAt: 0, ackedAt: 10 },
  { id: 2, sentAt: 5, ackedAt: 20 },
  { id: 3, sentAt: 15, ackedAt: 500 },
  { id: 4, sentAt: 300, ackedAt: 320 },
  { id: 5, sentAt: 510, ackedAt: 520 },
];

Deno.test("firstAckSentAfter: earliest acknowledgement among writes sent after t", () => {
  assertEquals(firstAckSentAfter(acks, 100), 320);
  assertEquals(firstAckSentAfter(acks, 10), 320);
  assertEquals(firstAckSentAfter(acks, 4), 20);
  assertEquals(firstAckSentAfter(acks, 600), undefined);
});

Deno.test("longestAckGap: covers the gap before from through the first ack after to", () => {
  assertEquals(longestAckGap(acks, 100, 310), 300);
  assertEquals(longestAckGap(acks, 25, 30), 300);
  assertEquals(longestAckGap(acks, 505, 515), 20);
  assertEquals(longestAckGap(acks, 0, 600), undefined);
});
