/**
 * Reading and rewriting the prepared-statement name of Parse, Bind, Describe and Close
 * messages without decoding the rest: the pooler maps each client's statement names onto
 * names unique on the shared backend connection.
 *
 * @module
 */

import { Frontend } from "./messages.ts";
import { PayloadReader } from "./payload_reader.ts";
import { MessageWriter } from "./writer.ts";

const decoder = new TextDecoder();

/** Where the statement name lies in a payload: `[start, end)`, `end` being its zero byte. */
interface NameSpan {
  start: number;
  end: number;
}

function statementNameSpan(type: number, payload: Uint8Array): NameSpan | null {
  switch (type) {
    case Frontend.parse: {
      const r = new PayloadReader(payload, "Parse");
      return { start: 0, end: r.skipCstring() };
    }
    case Frontend.bind: {
      const r = new PayloadReader(payload, "Bind");
      r.skipCstring(); // portal
      const start = r.offset;
      return { start, end: r.skipCstring() };
    }
    case Frontend.describe:
    case Frontend.close: {
      const r = new PayloadReader(payload, type === Frontend.close ? "Close" : "Describe");
      const target = r.byte();
      if (target !== 0x53 && target !== 0x50) {
        throw r.error(`unknown target type '${String.fromCharCode(target)}'`);
      }
      const end = r.skipCstring();
      return target === 0x53 ? { start: 1, end } : null;
    }
    default:
      return null;
  }
}

/**
 * Returns the prepared-statement name a Parse, Bind, or statement-targeted (`S`) Describe or
 * Close message names, `""` for the unnamed statement; `null` for a portal-targeted Describe
 * or Close and for other message types. Throws TesseraError 08P01 when the name is not
 * terminated.
 */
export function readStatementName(type: number, payload: Uint8Array): string | null {
  const span = statementNameSpan(type, payload);
  return span === null ? null : decoder.decode(payload.subarray(span.start, span.end));
}

/**
 * Returns the portal name a Bind, Execute, or portal-targeted (`P`) Describe or Close message
 * names; `null` for statement-targeted ones and other message types.
 */
export function readPortalName(type: number, payload: Uint8Array): string | null {
  switch (type) {
    case Frontend.bind:
    case Frontend.execute:
      return new PayloadReader(payload, type === Frontend.bind ? "Bind" : "Execute").cstring();
    case Frontend.describe:
    case Frontend.close: {
      const r = new PayloadReader(payload, type === Frontend.close ? "Close" : "Describe");
      return r.byte() === 0x50 ? r.cstring() : null;
    }
    default:
      return null;
  }
}

/**
 * Appends to `writer` the message `type`/`payload` with its statement name replaced by
 * `newName`, copying every other byte as is. Messages that name no statement (other types,
 * portal-targeted Describe/Close) are appended unchanged. Returns whether a name was replaced.
 */
export function writeWithStatementName(
  writer: MessageWriter,
  type: number,
  payload: Uint8Array,
  newName: string,
): boolean {
  const span = statementNameSpan(type, payload);
  writer.begin(type);
  if (span === null) {
    writer.bytes(payload).end();
    return false;
  }
  writer.bytes(payload.subarray(0, span.start)).cstring(newName).bytes(
    payload.subarray(span.end + 1),
  )
    .end();
  return true;
}

/**
 * Returns the whole message (type byte, length, payload) with its statement name replaced by
 * `newName`; see {@linkcode writeWithStatementName}.
 *
 * @example
 * ```ts
 * const out = rewriteStatementName(msg.type, msg.payload, `s${sessionId}_${name}`);
 * ```
 */
export function rewriteStatementName(
  type: number,
  payload: Uint8Array,
  newName: string,
): Uint8Array {
  const w = new MessageWriter(payload.byteLength + newName.length * 3 + 8);
  writeWithStatementName(w, type, payload, newName);
  return w.take();
}
