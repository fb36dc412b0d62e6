import type { NextConfig } from "next";
import { PHASE_DEVELOPMENT_SERVER } from "next/constants";

// A static export: `npm run build` writes plain files to out/, which scripts/serve.py serves at / beside the API.
// No Node process runs in production, and nothing is fetched from a CDN, so the page works offline.
// Only `npm run dev` (hot reload while working on the page) forwards the API to a running scripts/serve.py,
// at PYGPT_API (default http://127.0.0.1:8000), so the page's same-origin paths work there too.
export default function config(phase: string): NextConfig {
  const base: NextConfig = { output: "export", images: { unoptimized: true } };
  if (phase !== PHASE_DEVELOPMENT_SERVER) return base;
  const api = process.env.PYGPT_API ?? "http://127.0.0.1:8000";
  return {
    ...base,
    output: undefined,
    async rewrites() {
      return ["/v1/:path*", "/tokenize", "/health"].map((source) => ({
        source,
        destination: `${api}${source}`,
      }));
    },
  };
}
