/**
 * Named constants of the Postgres wire protocol (version 3.0): message type bytes, startup
 * request codes, authentication sub-codes and transaction status bytes.
 *
 * Type bytes are numbers (char codes), so hot-path code compares `msg.type === Backend.readyForQuery`
 * without building strings.
 *
 * @module
 */

/** Message type bytes sent by a client (frontend) to a server. */
export const Frontend = {
  /** `Q` Query: one SQL string, simple protocol. */
  query: 0x51,
  /** `P` Parse: create a prepared statement. */
  parse: 0x50,
  /** `B` Bind: create a portal from a prepared statement. */
  bind: 0x42,
  /** `E` Execute: run a portal. */
  execute: 0x45,
  /** `D` Describe: describe a statement or portal. */
  describe: 0x44,
  /** `C` Close: close a statement or portal. */
  close: 0x43,
  /** `S` Sync: end of an extended-protocol batch. */
  sync: 0x53,
  /** `H` Flush: ask the server to send what it has. */
  flush: 0x48,
  /** `X` Terminate: the client is going away. */
  terminate: 0x58,
  /** `d` CopyData. */
  copyData: 0x64,
  /** `c` CopyDone. */
  copyDone: 0x63,
  /** `f` CopyFail. */
  copyFail: 0x66,
  /** `F` FunctionCall (legacy fast-path). */
  functionCall: 0x46,
  /**
   * `p` PasswordMessage, also GSSResponse, SASLInitialResponse and SASLResponse: which one is
   * meant follows from the authentication request the server sent.
   */
  password: 0x70,
} as const;

/** Message type bytes sent by a server (backend) to a client. */
export const Backend = {
  /** `R` Authentication request or result; see {@linkcode AuthCode}. */
  authentication: 0x52,
  /** `K` BackendKeyData: process id and secret key for CancelRequest. */
  backendKeyData: 0x4b,
  /** `S` ParameterStatus: a run-time parameter's name and value. */
  parameterStatus: 0x53,
  /** `Z` ReadyForQuery, with the transaction status; see {@linkcode TransactionStatus}. */
  readyForQuery: 0x5a,
  /** `T` RowDescription. */
  rowDescription: 0x54,
  /** `D` DataRow. */
  dataRow: 0x44,
  /** `C` CommandComplete, with the command tag. */
  commandComplete: 0x43,
  /** `I` EmptyQueryResponse. */
  emptyQueryResponse: 0x49,
  /** `E` ErrorResponse. */
  errorResponse: 0x45,
  /** `N` NoticeResponse. */
  noticeResponse: 0x4e,
  /** `A` NotificationResponse (LISTEN/NOTIFY). */
  notificationResponse: 0x41,
  /** `1` ParseComplete. */
  parseComplete: 0x31,
  /** `2` BindComplete. */
  bindComplete: 0x32,
  /** `3` CloseComplete. */
  closeComplete: 0x33,
  /** `n` NoData. */
  noData: 0x6e,
  /** `s` PortalSuspended. */
  portalSuspended: 0x73,
  /** `t` ParameterDescription. */
  parameterDescription: 0x74,
  /** `G` CopyInResponse. */
  copyInResponse: 0x47,
  /** `H` CopyOutResponse. */
  copyOutResponse: 0x48,
  /** `W` CopyBothResponse (replication). */
  copyBothResponse: 0x57,
  /** `d` CopyData. */
  copyData: 0x64,
  /** `c` CopyDone. */
  copyDone: 0x63,
  /** `V` FunctionCallResponse (legacy fast-path). */
  functionCallResponse: 0x56,
  /** `v` NegotiateProtocolVersion. */
  negotiateProtocolVersion: 0x76,
} as const;

/** Protocol version 3.0 as sent in a StartupMessage: major in the high 16 bits, minor in the low. */
export const PROTOCOL_VERSION_3_0 = 196608;

/** Code of an SSLRequest (sent in place of a protocol version; the message length is 8). */
export const SSL_REQUEST_CODE = 80877103;

/** Code of a GSSENCRequest (sent in place of a protocol version; the message length is 8). */
export const GSSENC_REQUEST_CODE = 80877104;

/** Code of a CancelRequest (sent in place of a protocol version; the message length is 16). */
export const CANCEL_REQUEST_CODE = 80877102;

/**
 * Tessera's own request code (version 1234.5690): the gateway asks a pooler to carry many
 * sessions over this connection (`shared/mux`). Answered with `M`, or an ErrorResponse.
 */
export const MUX_REQUEST_CODE = 80877114;

/** The single byte that accepts a multiplexing request. */
export const MUX_ACCEPTED = 0x4d; // 'M'

/** Largest startup-phase packet Postgres accepts (its `MAX_STARTUP_PACKET_LENGTH`). */
export const MAX_STARTUP_PACKET_LENGTH = 10000;

/** Largest message Postgres accepts from a client (`PQ_LARGE_MESSAGE_LIMIT`: 1 GiB - 2). */
export const MAX_MESSAGE_LENGTH = 0x3fffffff - 1;

/** The single unframed byte that accepts an SSLRequest (`S`): a TLS handshake follows. */
export const SSL_ACCEPTED = 0x53;

/** The single unframed byte that accepts a GSSENCRequest (`G`). */
export const GSSENC_ACCEPTED = 0x47;

/** The single unframed byte that refuses an SSLRequest or GSSENCRequest (`N`). */
export const ENCRYPTION_REFUSED = 0x4e;

/** Sub-codes of an Authentication (`R`) message: the Int32 at the start of its payload. */
export const AuthCode = {
  /** AuthenticationOk. */
  ok: 0,
  /** AuthenticationKerberosV5 (no longer supported by Postgres). */
  kerberosV5: 2,
  /** AuthenticationCleartextPassword. */
  cleartextPassword: 3,
  /** AuthenticationMD5Password, followed by a 4-byte salt. */
  md5Password: 5,
  /** AuthenticationGSS. */
  gss: 7,
  /** AuthenticationGSSContinue. */
  gssContinue: 8,
  /** AuthenticationSSPI. */
  sspi: 9,
  /** AuthenticationSASL, followed by the mechanism names. */
  sasl: 10,
  /** AuthenticationSASLContinue, followed by SASL data. */
  saslContinue: 11,
  /** AuthenticationSASLFinal, followed by SASL outcome data. */
  saslFinal: 12,
} as const;

/** Transaction status byte of a ReadyForQuery message. */
export type TransactionStatus = "I" | "T" | "E";

/** The transaction status bytes of ReadyForQuery, by name. */
export const TransactionStatusByte = {
  /** `I`: idle, not in a transaction block. */
  idle: 0x49,
  /** `T`: in a transaction block. */
  inTransaction: 0x54,
  /** `E`: in a failed transaction block (statements are rejected until its end). */
  failed: 0x45,
} as const;

/** `S` or `P`: the target kind of a Describe or Close message. */
export type DescribeTarget = "S" | "P";

/** Field type bytes of an ErrorResponse or NoticeResponse. */
export const ErrorField = {
  /** `S` severity, possibly localized. */
  severity: 0x53,
  /** `V` severity, never localized (Postgres 9.6+). */
  severityNonLocalized: 0x56,
  /** `C` SQLSTATE code. */
  code: 0x43,
  /** `M` primary message. */
  message: 0x4d,
  /** `D` detail. */
  detail: 0x44,
  /** `H` hint. */
  hint: 0x48,
  /** `P` cursor position in the query string (1-based characters). */
  position: 0x50,
  /** `p` position in an internally generated query. */
  internalPosition: 0x70,
  /** `q` the internally generated query. */
  internalQuery: 0x71,
  /** `W` context (call stack). */
  where: 0x57,
  /** `s` schema name. */
  schema: 0x73,
  /** `t` table name. */
  table: 0x74,
  /** `c` column name. */
  column: 0x63,
  /** `d` data type name. */
  dataType: 0x64,
  /** `n` constraint name. */
  constraint: 0x6e,
  /** `F` source file. */
  file: 0x46,
  /** `L` source line. */
  line: 0x4c,
  /** `R` source routine. */
  routine: 0x52,
} as const;

/** Names of frontend message types by type byte, for error messages and logs. */
export const FRONTEND_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Frontend).map(([name, code]) => [code, name]),
);

/** Names of backend message types by type byte, for error messages and logs. */
export const BACKEND_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Backend).map(([name, code]) => [code, name]),
);
