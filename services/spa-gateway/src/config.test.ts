import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateIdentity } from '@umbra/protocol';
import { parseConfig } from './config.ts';

const key = encodeKey(generateIdentity().publicKey);

const minimal = `
interface: eth0
keyDir: keys
stateDir: /var/lib/umbra
clients:
  - name: alice
    publicKey: ${key}
    allow: [tcp/22, "udp/10000-10010"]
`;

test('a minimal YAML file gets the documented defaults', () => {
  const config = parseConfig(minimal, '/etc/umbra/gateway.yaml');
  assert.equal(config.spaPort, 62201);
  assert.equal(config.timeWindowSeconds, 30);
  assert.equal(config.requireSourceBinding, false);
  assert.equal(config.keyDir, '/etc/umbra/keys', 'relative paths are relative to the file');
  assert.equal(config.stateDir, '/var/lib/umbra');
  assert.equal(config.clients[0]?.ttlSeconds, 30);
  assert.deepEqual(config.clients[0]?.allow, [
    { protocol: 'tcp', fromPort: 22, toPort: 22 },
    { protocol: 'udp', fromPort: 10000, toPort: 10010 },
  ]);
  assert.equal(config.clients[0]?.identityId.length, 16);
});

test('source binding is set for all clients and can be overridden per client', () => {
  const bound = parseConfig(`requireSourceBinding: true\n${minimal}`, 'gw.yaml');
  assert.equal(bound.clients[0]?.requireSourceBinding, true);
  const except = parseConfig(`${minimal}    requireSourceBinding: true\n`, 'gw.yaml');
  assert.equal(except.requireSourceBinding, false);
  assert.equal(except.clients[0]?.requireSourceBinding, true);
});

test('JSON is accepted too', () => {
  const json = JSON.stringify({ interface: 'eth0', keyDir: '/k', stateDir: '/s', clients: [] });
  assert.equal(parseConfig(json, 'gw.json').interface, 'eth0');
});

function errorOf(text: string): string {
  try {
    parseConfig(text, 'gw.yaml');
  } catch (error) {
    return (error as Error).message;
  }
  assert.fail('expected a configuration error');
}

test('errors name the file and the key', () => {
  assert.match(errorOf('keyDir: k\nstateDir: s\n'), /^gw\.yaml: interface: missing/);
  assert.match(errorOf(`${minimal}spaPort: 70000\n`), /gw\.yaml: spaPort: .*65535/);
  assert.match(errorOf(`${minimal}colour: blue\n`), /gw\.yaml: \(top level\): unknown key\(s\) colour/);
  assert.match(
    errorOf(minimal.replace(key, 'not-a-key')),
    /gw\.yaml: clients\[0\]\.publicKey: expected the 44-character/,
  );
  assert.match(
    errorOf(minimal.replace('tcp/22', 'tcp/0')),
    /gw\.yaml: clients\[0\]\.allow\[0\]: expected PROTOCOL\/PORT/,
  );
  assert.match(errorOf('interface: [\n'), /gw\.yaml: not valid YAML or JSON/);
  assert.match(errorOf(`${minimal}tunnel: {workers: 1.5}\n`), /gw\.yaml: tunnel\.workers: /);
  assert.match(errorOf(`${minimal}tunnel: {workers: 99}\n`), /gw\.yaml: tunnel\.workers: .*16/);
});

test('tunnel workers: unset means the default (decided at start), 0 keeps the TLS in the main thread', () => {
  assert.equal(parseConfig(minimal, 'gw.yaml').tunnel.workers, undefined);
  assert.equal(parseConfig(`${minimal}tunnel: {workers: 0}\n`, 'gw.yaml').tunnel.workers, 0);
});

test('duplicate client names and keys are refused', () => {
  const twice = `${minimal}  - name: alice\n    publicKey: ${encodeKey(generateIdentity().publicKey)}\n    allow: [tcp/22]\n`;
  assert.match(errorOf(twice), /clients\[1\]\.name: "alice" is already used by clients\[0\]/);
  const sameKey = `${minimal}  - name: bob\n    publicKey: ${key}\n    allow: [tcp/22]\n`;
  assert.match(errorOf(sameKey), /clients\[1\]\.publicKey: the same key is already given to clients\[0\]/);
});
