/**
 * The sharding planner: SQL in, a tree of engine primitives out, with no I/O. See
 * `docs/sharding.md` for the plan contract.
 *
 * @module
 */

export * from "./plan.ts";
export { deparse, initParser, parserReady, parseSql } from "./parser.ts";
export { type Literal, normalize, type Normalized } from "./normalize.ts";
export { Bindings, buildInsertQuery, renderQuery, resolveValue } from "./bind.ts";
export { type Planned, Planner, type PlannerOptions, unsupported } from "./planner.ts";
export { explainPlan } from "./explain.ts";
export { LruCache } from "./cache.ts";
