/**
 * Assertions for tests, built on `node:assert` (JSR's `@std/assert` is not reachable here).
 * Names and argument order follow `@std/assert` so tests read the same.
 *
 * @module
 */

import nodeAssert from "node:assert/strict";

/** Asserts that `value` is truthy. */
export function assert(value: unknown, message?: string): asserts value {
  nodeAssert.ok(value, message);
}

/** Asserts deep, strict equality of `actual` and `expected`. */
export function assertEquals<T>(
  actual: unknown,
  expected: T,
  message?: string,
): asserts actual is T {
  nodeAssert.deepStrictEqual(actual, expected, message);
}

/** Asserts that `actual` and `expected` are not deeply equal. */
export function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  nodeAssert.notDeepStrictEqual(actual, expected, message);
}

/** Asserts that `text` contains `expected`. */
export function assertStringIncludes(text: string, expected: string, message?: string): void {
  if (!text.includes(expected)) {
    throw new nodeAssert.AssertionError({
      message: message ?? `expected ${JSON.stringify(text)} to include ${JSON.stringify(expected)}`,
      actual: text,
      expected,
    });
  }
}

/** Asserts that `text` matches `pattern`. */
export function assertMatch(text: string, pattern: RegExp, message?: string): void {
  nodeAssert.match(text, pattern, message);
}

type ErrorClass<E extends Error> = abstract new (...args: never[]) => E;

function checkError<E extends Error>(
  err: unknown,
  errorClass: ErrorClass<E> | undefined,
  includes: string | undefined,
): E {
  if (errorClass !== undefined && !(err instanceof errorClass)) {
    throw new nodeAssert.AssertionError({
      message: `expected error of class ${errorClass.name}, got ${String(err)}`,
    });
  }
  if (includes !== undefined) {
    const message = err instanceof Error ? err.message : String(err);
    assertStringIncludes(message, includes);
  }
  return err as E;
}

/** Asserts that `fn` throws (optionally an instance of `errorClass` whose message includes `includes`). */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  errorClass?: ErrorClass<E>,
  includes?: string,
): E {
  try {
    fn();
  } catch (err) {
    return checkError(err, errorClass, includes);
  }
  throw new nodeAssert.AssertionError({ message: "expected function to throw" });
}

/** Asserts that `fn` rejects (optionally with an instance of `errorClass` whose message includes `includes`). */
export async function assertRejects<E extends Error = Error>(
  fn: () => PromiseLike<unknown>,
  errorClass?: ErrorClass<E>,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (err) {
    return checkError(err, errorClass, includes);
  }
  throw new nodeAssert.AssertionError({ message: "expected promise to reject" });
}
