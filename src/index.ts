// sesscache's public API: everything a user imports comes from here.
export * from "./client/index.js";
export * from "./engine/index.js";
export * from "./metrics.js";
export * from "./server/index.js";
export * from "./session/index.js";
export * from "./stores/index.js";
