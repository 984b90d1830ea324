import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { linuxPosture } from './linux.ts';

const base = mkdtempSync(join(tmpdir(), 'umbra-posture-'));
after(() => rmSync(base, { recursive: true, force: true }));

function tree(files: Record<string, string>, dirs: string[] = []): string {
  const root = mkdtempSync(join(base, 'root-'));
  for (const dir of dirs) mkdirSync(join(root, dir), { recursive: true });
  for (const [path, contents] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), contents);
  }
  return root;
}

const osRelease = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n';

test('a LUKS root with LVM on top, nftables loaded', () => {
  const root = tree(
    {
      'etc/os-release': osRelease,
      'proc/sys/kernel/osrelease': '6.1.0-27-amd64\n',
      'proc/self/mounts': '/dev/mapper/vg-root / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n',
      'sys/block/dm-1/dm/name': 'vg-root\n',
      'sys/class/block/dm-1/dm/uuid': 'LVM-abc\n',
      'sys/class/block/dm-0/dm/uuid': 'CRYPT-LUKS2-0123-sda3_crypt\n',
      'proc/modules': 'nf_tables 344064 5 nft_ct, Live 0x0\n',
    },
    ['sys/class/block/dm-1/slaves/dm-0', 'sys/class/block/dm-0/slaves/sda3', 'sys/class/block/sda3'],
  );
  assert.deepEqual(linuxPosture({ root }), {
    os: 'linux',
    os_name: 'debian',
    os_version: '12',
    kernel: '6.1.0-27-amd64',
    disk_encryption: 'on',
    firewall: 'on',
  });
});

test('a plain partition and no packet filter', () => {
  const root = tree(
    {
      'etc/os-release': osRelease,
      'proc/self/mounts': '/dev/sda2 / ext4 rw 0 0\n',
      'proc/modules': 'ext4 1 0 - Live 0x0\n',
    },
    ['sys/class/block/sda2'],
  );
  const posture = linuxPosture({ root });
  assert.equal(posture.disk_encryption, 'off');
  assert.equal(posture.firewall, 'off');
});

test('what the platform does not tell is left out, not guessed', () => {
  const root = tree({ 'proc/self/mounts': 'overlay / overlay rw 0 0\n' });
  assert.deepEqual(linuxPosture({ root }), { os: 'linux' });
});

test('this machine answers without throwing', () => {
  const posture = linuxPosture();
  assert.equal(posture.os, 'linux');
  assert.equal(typeof posture.kernel, 'string');
});
