import type { NextConfig } from "next";

// A static export: `npm run build` writes plain files to out/, which scripts/serve.py serves at / beside the API.
// No Node process runs in production, and nothing is fetched from a CDN, so the page works offline.
const nextConfig: NextConfig = {
  output: "export",
  images: { unoptimized: true },
};

export default nextConfig;
