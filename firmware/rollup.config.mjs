// One bundle per device service. The box runs plain JavaScript on Node 22 (Buildroot's): no type
// stripping, no node_modules tree to walk at start, and only the native addons left outside,
// because they are built per target by Buildroot's npm environment.
import commonjs from '@rollup/plugin-commonjs';
import json from '@rollup/plugin-json';
import { nodeResolve } from '@rollup/plugin-node-resolve';
import esbuild from 'rollup-plugin-esbuild';

/** Native addons: loaded at run time from the target's node_modules. */
const NATIVE = ['pcap', 'koffi'];

const service = (name, input) => ({
  input,
  output: {
    file: `dist/${name}.mjs`,
    format: 'es',
    inlineDynamicImports: true,
    banner: '#!/usr/bin/env node',
  },
  external: (id) => id.startsWith('node:') || NATIVE.includes(id),
  plugins: [
    nodeResolve({ preferBuiltins: true, exportConditions: ['node'] }),
    commonjs({ ignoreDynamicRequires: true }),
    json(),
    esbuild({ target: 'node22', loaders: { '.ts': 'ts' } }),
  ],
  onwarn(warning, warn) {
    // Circular imports inside zod and yaml are theirs and harmless.
    if (warning.code === 'CIRCULAR_DEPENDENCY' && /node_modules/.test(warning.message)) return;
    warn(warning);
  },
});

export default [
  service('umbra-gateway', '../services/spa-gateway/src/cli.ts'),
  // The tunnel listener's worker threads load it from beside the gateway's bundle.
  service('umbra-tunnel-worker', '../services/spa-gateway/src/tunnel/tunnel-worker.ts'),
];
