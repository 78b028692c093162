/**
 * `npm:etcd3`, typed by `etcd3_types.d.ts` instead of its own declarations (which would bring
 * `@types/node` into every program that uses topo; see that file). Import etcd3 from here only.
 *
 * @module
 */

// @ts-types="./etcd3_types.d.ts"
export * from "etcd3";
