// Starts a CLI written in TypeScript. Plain JavaScript on purpose: it must run on any Node, to say
// clearly that Node's type stripping needs 22.18 or later instead of failing on the first type.
export async function launch(program, entry) {
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major < 22 || (major === 22 && minor < 18)) {
    process.stderr.write(
      `${program}: Node.js ${process.versions.node} is too old (need 22.18 or later).\n` +
        'Run scripts/setup.sh, then `. scripts/env.sh` to put the Node it installs first on PATH.\n',
    );
    process.exit(1);
  }
  // Node caches compiled code, and the result of stripping types, across runs (in the OS temporary
  // directory unless NODE_COMPILE_CACHE says where): it cuts an admin command's start from about
  // 0.9 s to a fraction — time that counts when revoking someone.
  const { enableCompileCache } = await import('node:module');
  enableCompileCache?.();
  await import(entry);
}
