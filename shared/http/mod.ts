/**
 * HTTP serving shared by every component: the `/live`, `/ready` and `/status` app, and one
 * server per component that carries both that app and the component's Connect RPC services.
 *
 * @example
 * ```ts
 * import { createStatusApp, serveComponent } from "../shared/http/mod.ts";
 *
 * const app = createStatusApp({ component: "pgctld", alias, ready: () => true });
 * const served = await serveComponent({ port: 17100, app, rpc, logger });
 * ```
 *
 * @module
 */
export { createStatusApp, type StatusAppOptions } from "./status_app.ts";
export {
  type HttpApp,
  serveComponent,
  type ServeComponentOptions,
  type ServedComponent,
} from "./serve.ts";
