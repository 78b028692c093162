/**
 * Named SQLSTATE codes used by Tessera. Values follow Postgres's errcodes.txt.
 *
 * @module
 */

/** SQLSTATE codes that Tessera raises, by name. */
export const SqlState = {
  successfulCompletion: "00000",
  warning: "01000",
  connectionException: "08000",
  connectionFailure: "08006",
  protocolViolation: "08P01",
  sqlclientUnableToEstablishSqlconnection: "08001",
  featureNotSupported: "0A000",
  invalidParameterValue: "22023",
  dataException: "22000",
  invalidTransactionState: "25000",
  activeSqlTransaction: "25001",
  inFailedSqlTransaction: "25P02",
  idleInTransactionSessionTimeout: "25P03",
  invalidAuthorizationSpecification: "28000",
  invalidPassword: "28P01",
  serializationFailure: "40001",
  syntaxError: "42601",
  insufficientPrivilege: "42501",
  undefinedObject: "42704",
  duplicateObject: "42710",
  invalidCatalogName: "3D000",
  insufficientResources: "53000",
  diskFull: "53100",
  outOfMemory: "53200",
  tooManyConnections: "53300",
  programLimitExceeded: "54000",
  objectNotInPrerequisiteState: "55000",
  objectInUse: "55006",
  lockNotAvailable: "55P03",
  operatorIntervention: "57000",
  queryCanceled: "57014",
  adminShutdown: "57P01",
  crashShutdown: "57P02",
  cannotConnectNow: "57P03",
  systemError: "58000",
  ioError: "58030",
  undefinedFile: "58P01",
  duplicateFile: "58P02",
  configFileError: "F0000",
  internalError: "XX000",
  dataCorrupted: "XX001",
} as const;

/**
 * A five-character SQLSTATE: one of those named in {@linkcode SqlState} or any other that
 * Postgres sends (codes from a server pass through unchanged).
 */
export type SqlStateCode = string;
