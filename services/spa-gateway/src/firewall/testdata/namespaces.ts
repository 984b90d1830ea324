// Network namespaces for the firewall tests: created by the test, deleted by it, never the
// namespace the test runs in.

import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export function addNamespace(name: string): void {
  deleteNamespace(name); // a leftover from a killed run of this pid
  execFileSync('ip', ['netns', 'add', name]);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

export function deleteNamespace(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

/** Runs a command in the namespace and returns its stdout; throws with its stderr on failure. */
export function inNamespace(namespace: string, command: string, ...args: string[]): string {
  // stderr is captured, so it lands in the thrown error rather than in the test report.
  return execFileSync('ip', ['netns', 'exec', namespace, command, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export async function inNamespaceAsync(
  namespace: string,
  command: string,
  ...args: string[]
): Promise<string> {
  const { stdout } = await execFileAsync('ip', ['netns', 'exec', namespace, command, ...args], {
    encoding: 'utf8',
  });
  return stdout;
}

/** Runs a Node script in the namespace, with the Node running the tests. */
export function nodeInNamespace(namespace: string, script: string, ...args: string[]): string {
  return inNamespace(namespace, process.execPath, script, ...args);
}

export async function nodeInNamespaceAsync(
  namespace: string,
  script: string,
  ...args: string[]
): Promise<string> {
  return inNamespaceAsync(namespace, process.execPath, script, ...args);
}

/** Starts a long-running Node script in the namespace; resolves once it prints `ready`. */
export function startInNamespace(namespace: string, ready: string, script: string, ...args: string[]) {
  const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, script, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  return new Promise<ChildProcess>((resolve, reject) => {
    let seen = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      seen += chunk;
      if (seen.includes(ready)) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`${script} exited (${code}) before printing ${ready}`)));
  });
}

export interface Endpoint {
  namespace: string;
  interfaceName: string;
  ipv4: string;
  ipv6: string;
}

/** Joins two namespaces with a veth pair and addresses both ends (prefixes /24 and /64). */
export function link(a: Endpoint, b: Endpoint): void {
  execFileSync('ip', [
    'link',
    'add',
    a.interfaceName,
    'netns',
    a.namespace,
    'type',
    'veth',
    'peer',
    'name',
    b.interfaceName,
    'netns',
    b.namespace,
  ]);
  for (const end of [a, b]) {
    const ip = (...args: string[]) => execFileSync('ip', ['-n', end.namespace, ...args]);
    ip('addr', 'add', `${end.ipv4}/24`, 'dev', end.interfaceName);
    // nodad: duplicate address detection would keep the address unusable for a second or two.
    ip('addr', 'add', `${end.ipv6}/64`, 'dev', end.interfaceName, 'nodad');
    ip('link', 'set', end.interfaceName, 'up');
  }
}
