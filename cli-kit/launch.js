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
  await import(entry);
}
