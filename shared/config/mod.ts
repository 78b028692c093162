/**
 * Flags with environment fallbacks, validated by zod.
 *
 * @module
 */
export {
  ConfigError,
  type ConfigSpec,
  type FieldSpec,
  loadConfig,
  type LoadResult,
  portSchema,
  positiveIntSchema,
  usage,
} from "./config.ts";
