/**
 * Many Postgres-wire sessions over one connection, for the gateway↔pooler hop: the framing and
 * its channels ({@linkcode Mux}, {@linkcode MuxChannel}) and the dialing side
 * ({@linkcode MuxDialer}).
 *
 * @module
 */
export {
  Mux,
  MUX_ACCEPTED,
  MUX_REQUEST_CODE,
  MuxChannel,
  type MuxOptions,
  type MuxStats,
  muxStats,
} from "./mux.ts";
export { type DialAddress, MuxDialer, type MuxDialerOptions } from "./dial.ts";
