/**
 * Flags with environment fallbacks, validated by zod.
 *
 * @module
 */
export {
  absolutePathSchema,
  ConfigError,
  type ConfigSpec,
  type FieldSpec,
  hostPortSchema,
  loadConfig,
  type LoadResult,
  nonNegativeIntSchema,
  portSchema,
  positiveIntSchema,
  splitHostPort,
  usage,
} from "./config.ts";
