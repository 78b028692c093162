/** Version of the pooler, reported in `/status` and by the admin console's `SHOW VERSION`. */
export const POOLER_VERSION = "0.1.0";
