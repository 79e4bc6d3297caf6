// The console's build: one page (index.html) and hashed files under assets/, which gateway_core serves at /
// (gateway_core/console.py). `npm run dev` proxies the API to a gateway_core on NEXUS_CORE_URL.
import { defineConfig } from "vitest/config";

const core = process.env.NEXUS_CORE_URL ?? "http://127.0.0.1:18080";

export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, target: "es2022" },
  server: { proxy: { "/api": { target: core, ws: true } } },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
