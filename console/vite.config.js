// The console is served by the node at /console/ (see crates/zero-node/src/console.rs), from
// the files of dist/ embedded in the binary. The build is committed and must be reproducible:
// `scripts/test.sh` rebuilds it and compares.
import { defineConfig } from 'vite'

export default defineConfig({
  base: '/console/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // No inline script or style (the page's Content-Security-Policy allows neither), no
    // source maps in the binary.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2022',
  },
})
