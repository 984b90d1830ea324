#!/usr/bin/env node
// Umbra is TypeScript run by Node's type stripping, which needs Node 22.18 or later.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `umbra: Node.js ${process.versions.node} is too old (need 22.18 or later).\n` +
      'Run scripts/setup.sh, then `. scripts/env.sh` to put the Node it installs first on PATH.\n',
  );
  process.exit(1);
}
await import('../src/cli.ts');
