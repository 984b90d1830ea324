// USB sticks as loop devices: FAT and ext4 images attached with losetup, "inserted" by making a
// symlink to the loop device in a temporary watch directory, as udev does in /dev/disk/by-uuid.
// Needs root (losetup, mount), as CI runs; dosfstools and mtools for the FAT images.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type UsbBundle, UsbBundleWatcher, type UsbStickError } from './watcher.ts';

const isRoot = process.getuid?.() === 0;
const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1' };

function sh(file: string, args: string[], env = process.env): string {
  return execFileSync(file, args, { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Whether this kernel can mount the filesystem (a FAT driver is not in every kernel: then the FAT cases skip). */
function kernelHas(fs: string): boolean {
  const listed = () =>
    readFileSync('/proc/filesystems', 'utf8')
      .split('\n')
      .some((l) => l.trim().endsWith(fs));
  if (listed()) return true;
  try {
    sh('modprobe', [fs]);
  } catch {}
  return listed();
}

type Kind = 'vfat' | 'ext4' | 'ext2' | 'blank';

let work: string;
let seq = 0;
const attached: string[] = [];

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'umbra-usb-'));
});

after(async () => {
  for (const dev of attached) {
    try {
      sh('losetup', ['-d', dev]);
    } catch (err) {
      console.error(`losetup -d ${dev}: ${(err as Error).message}`);
    }
  }
  await rm(work, { recursive: true, force: true });
});

/** Makes an 8 MiB image with the files at its top level, and attaches it to a loop device. */
async function makeStick(
  kind: Kind,
  label: string,
  files: Record<string, Uint8Array | string>,
  opts: { readOnly?: boolean } = {},
): Promise<{ image: string; device: string }> {
  const image = join(work, `stick-${++seq}.img`);
  await writeFile(image, '');
  sh('truncate', ['-s', '8M', image]);
  if (kind === 'vfat') {
    sh('mkfs.vfat', ['-n', label, image]);
    for (const [name, data] of Object.entries(files)) {
      const src = join(work, `src-${seq}`);
      await writeFile(src, data);
      sh('mcopy', ['-i', image, src, `::/${name}`], mtoolsEnv);
      await rm(src);
    }
  } else if (kind === 'ext4' || kind === 'ext2') {
    const dir = join(work, `tree-${seq}`);
    await mkdir(dir);
    for (const [name, data] of Object.entries(files)) await writeFile(join(dir, name), data);
    sh(`mkfs.${kind}`, ['-q', '-F', '-L', label, '-d', dir, image]);
    await rm(dir, { recursive: true });
  }
  const device = sh('losetup', ['--find', '--show', ...(opts.readOnly ? ['-r'] : []), image]).trim();
  attached.push(device);
  return { image, device };
}

/** The files at the image's top level, read without mounting it. */
function listImage(kind: Kind, image: string): string[] {
  if (kind === 'vfat') {
    return sh('mdir', ['-b', '-i', image, '::/'], mtoolsEnv)
      .split('\n')
      .filter(Boolean)
      .map((l) => l.replace(/^::\//, ''));
  }
  return sh('debugfs', ['-R', 'ls -p /', image])
    .split('\n')
    .map((l) => l.split('/')[5])
    .filter((n): n is string => !!n && n !== '.' && n !== '..' && n !== 'lost+found');
}

function catImage(kind: Kind, image: string, name: string): string {
  if (kind === 'vfat') return sh('mtype', ['-i', image, `::/${name}`], mtoolsEnv);
  return sh('debugfs', ['-R', `cat /${name}`, image]);
}

/** A watcher on a fresh watch directory, recording what it reports. */
async function harness(onBundle?: (b: UsbBundle) => Promise<void>, fatAccess?: 'auto' | 'mount' | 'mtools') {
  const watchDir = join(work, `by-uuid-${++seq}`);
  const mountRoot = join(work, `mnt-${seq}`);
  await mkdir(watchDir);
  const bundles: UsbBundle[] = [];
  const errors: UsbStickError[] = [];
  const logs: string[] = [];
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  const watcher = new UsbBundleWatcher({
    watchDir,
    mountRoot,
    rescanMs: 0,
    fatAccess,
    log: (level, message) => logs.push(`${level} ${message}`),
    onBundle: async (b) => {
      bundles.push(b);
      wake();
      await onBundle?.(b);
    },
    onError: (e) => {
      errors.push(e);
      wake();
    },
  });
  /** Waits until n outcomes (bundles + errors) are in. */
  const outcomes = async (n: number) => {
    const deadline = Date.now() + 15_000;
    while (bundles.length + errors.length < n) {
      assert.ok(Date.now() < deadline, `timed out waiting for ${n} outcome(s); log:\n${logs.join('\n')}`);
      await new Promise<void>((res) => {
        waiters.push(res);
        setTimeout(res, 200);
      });
    }
    await watcher.idle();
  };
  const insert = (device: string, name = `uuid-${++seq}`) => symlink(device, join(watchDir, name));
  /** Nothing mounted under the mount root, and no mount point left behind. */
  const assertClean = async () => {
    await watcher.stop();
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(mountRoot), 'a mount was left behind');
    assert.deepEqual(existsSync(mountRoot) ? await readdir(mountRoot) : [], []);
  };
  return { watcher, watchDir, bundles, errors, logs, outcomes, insert, assertClean };
}

describe('USB sticks', { skip: isRoot ? false : 'needs root (losetup, mount)' }, () => {
  const variants = [
    { kind: 'vfat', fat: 'mount', name: 'vfat (mounted)' },
    { kind: 'vfat', fat: 'mtools', name: 'vfat (mtools)' },
    { kind: 'ext4', fat: undefined, name: 'ext4' },
  ] as const;
  for (const { kind, fat, name } of variants) {
    const skip = fat === 'mtools' || kernelHas(kind) ? false : `this kernel cannot mount ${kind}`;

    test(`${name}: the bundle is read with its exact bytes, and a report is written back`, {
      skip,
    }, async () => {
      const bytes = randomBytes(3000);
      const stick = await makeStick(kind, 'SITE7', { 'branch-7.umbra-bundle': bytes, 'README.TXT': 'hello' });
      const h = await harness(async (b) => b.writeReport('enrolled: gateway gw-7\n'), fat);
      await h.watcher.start();
      await h.insert(stick.device);
      await h.outcomes(1);
      assert.deepEqual(h.errors, []);
      const b = h.bundles[0]!;
      assert.deepEqual(Buffer.from(b.bundle), bytes);
      assert.equal(b.source, 'SITE7');
      assert.equal(b.fileName, 'branch-7.umbra-bundle');
      assert.equal(b.device, stick.device);
      await h.assertClean();
      const reports = listImage(kind, stick.image).filter((n) => n.startsWith('umbra-report-'));
      assert.equal(reports.length, 1, `files: ${listImage(kind, stick.image).join(', ')}`);
      assert.match(reports[0]!, /^umbra-report-\d{8}T\d{6}\.\d{3}Z\.txt$/);
      assert.equal(catImage(kind, stick.image, reports[0]!), 'enrolled: gateway gw-7\n');
      assert.ok(h.logs.some((l) => /report umbra-report-.* written to the stick SITE7/.test(l)));
    });

    test(`${name}: a stick with no bundle is a clear error`, { skip }, async () => {
      const stick = await makeStick(kind, 'EMPTY', { 'notes.txt': 'nothing here' });
      const h = await harness(undefined, fat);
      await h.watcher.start();
      await h.insert(stick.device);
      await h.outcomes(1);
      assert.equal(h.bundles.length, 0);
      assert.equal(h.errors[0]?.code, 'no-bundle');
      assert.equal(h.errors[0]?.message, 'no *.umbra-bundle file on the stick EMPTY');
      assert.ok(h.logs.includes('error usb: no *.umbra-bundle file on the stick EMPTY'));
      await h.assertClean();
    });

    test(`${name}: two bundles are named and refused`, { skip }, async () => {
      const stick = await makeStick(kind, 'TWO', { 'a.umbra-bundle': 'a', 'b.umbra-bundle': 'b' });
      const h = await harness(undefined, fat);
      await h.watcher.start();
      await h.insert(stick.device);
      await h.outcomes(1);
      assert.equal(h.bundles.length, 0);
      assert.equal(h.errors[0]?.code, 'several-bundles');
      assert.match(
        h.errors[0]!.message,
        /2 bundle files on the stick TWO \(a\.umbra-bundle, b\.umbra-bundle\)/,
      );
      await h.assertClean();
    });

    test(`${name}: a read-only stick is read, and the report stays in the log`, { skip }, async () => {
      const bytes = randomBytes(100);
      const stick = await makeStick(kind, 'LOCKED', { 'x.umbra-bundle': bytes }, { readOnly: true });
      const h = await harness(async (b) => b.writeReport('enrolled\n'), fat);
      await h.watcher.start();
      await h.insert(stick.device);
      await h.outcomes(1);
      assert.deepEqual(Buffer.from(h.bundles[0]!.bundle), bytes);
      assert.ok(h.logs.includes('warn usb: the stick LOCKED is read-only; the report stays in the log'));
      await h.assertClean();
      assert.deepEqual(listImage(kind, stick.image), ['x.umbra-bundle']);
    });
  }

  const ext4 = kernelHas('ext4') ? false : 'this kernel cannot mount ext4';

  test('vfat (auto): mounted when the kernel can, else read with mtools, and said so', async () => {
    const stick = await makeStick('vfat', 'AUTO', { 'a.umbra-bundle': 'auto' });
    const h = await harness(undefined, 'auto');
    await h.watcher.start();
    await h.insert(stick.device);
    await h.outcomes(1);
    assert.equal(new TextDecoder().decode(h.bundles[0]!.bundle), 'auto');
    const fellBack = h.logs.includes(
      'info usb: this kernel cannot mount vfat; FAT sticks are read and written with mtools',
    );
    assert.equal(fellBack, !kernelHas('vfat'));
    await h.assertClean();
  });

  test('a blank stick and an ext2 stick are refused with a clear error', async () => {
    const blank = await makeStick('blank', '', {});
    const ext2 = await makeStick('ext2', 'OLD', { 'x.umbra-bundle': 'x' });
    const h = await harness();
    await h.watcher.start();
    await h.insert(blank.device);
    await h.insert(ext2.device);
    await h.outcomes(2);
    assert.equal(h.bundles.length, 0);
    const byCode = h.errors.map((e) => [e.code, e.message]);
    assert.deepEqual(byCode, [
      [
        'unsupported-filesystem',
        `the stick ${blank.device} has no filesystem on ${blank.device}; format it FAT32 (vfat) or ext4 and copy the bundle onto it`,
      ],
      [
        'unsupported-filesystem',
        'the stick OLD has a ext2 filesystem; only FAT (vfat) and ext4 are supported',
      ],
    ]);
    await h.assertClean();
  });

  for (const kind of ['ext4', 'vfat'] as const) {
    test(`${kind}: a bundle over 64 KiB is refused`, { skip: kind === 'ext4' ? ext4 : false }, async () => {
      const stick = await makeStick(kind, 'BIG', { 'big.umbra-bundle': randomBytes(64 * 1024 + 1) });
      const h = await harness(undefined, 'mtools');
      await h.watcher.start();
      await h.insert(stick.device);
      await h.outcomes(1);
      assert.equal(h.errors[0]?.code, 'bundle-too-large');
      assert.match(
        h.errors[0]!.message,
        /^big\.umbra-bundle on the stick BIG is larger than 65536 bytes, the most a bundle may be$/,
      );
      await h.assertClean();
    });
  }

  test('ext4: a bundle that is a symlink is not followed', { skip: ext4 }, async () => {
    const stick = await makeStick('ext4', 'LINK', {});
    // A symlink made in the image with debugfs: to a file of the box's own.
    sh('debugfs', ['-w', '-R', 'symlink /evil.umbra-bundle /etc/hostname', stick.image]);
    const h = await harness();
    await h.watcher.start();
    await h.insert(stick.device);
    await h.outcomes(1);
    assert.equal(h.bundles.length, 0);
    assert.equal(h.errors[0]?.message, 'evil.umbra-bundle on the stick LINK is not a file');
    await h.assertClean();
  });

  test('a stick present at start is found by the first scan; seen again while busy, it is ignored', {
    skip: ext4,
  }, async () => {
    const stick = await makeStick('ext4', 'EARLY', { 'e.umbra-bundle': 'early' });
    let release!: () => void;
    const held = new Promise<void>((res) => {
      release = res;
    });
    const h = await harness(() => held);
    await h.insert(stick.device, 'before-start');
    await writeFile(join(h.watchDir, 'not-a-device'), 'x');
    await h.watcher.start();
    while (h.bundles.length === 0) await new Promise((res) => setTimeout(res, 50));
    // The same device under another name while the listener still holds it: ignored.
    await h.insert(stick.device, 'again');
    await new Promise((res) => setTimeout(res, 300));
    release();
    await h.watcher.idle();
    assert.equal(h.bundles.length, 1);
    assert.equal(new TextDecoder().decode(h.bundles[0]!.bundle), 'early');
    assert.ok(h.logs.some((l) => l.includes('seen again while it is being handled; ignored')));
    assert.ok(h.logs.some((l) => l.includes('not-a-device is not a block device; ignored')));
    await h.assertClean();
  });

  test('stop() while a stick is being read leaves nothing mounted', { skip: ext4 }, async () => {
    const stick = await makeStick('ext4', 'STOP', { 's.umbra-bundle': 's' });
    const h = await harness();
    await h.watcher.start();
    await h.insert(stick.device);
    // Stop as soon as the stick is mounted (or has been handled already).
    const deadline = Date.now() + 5000;
    while (
      !readFileSync('/proc/self/mountinfo', 'utf8').includes(h.watcher.mountRoot) &&
      Date.now() < deadline
    ) {
      if (h.bundles.length + h.errors.length > 0) break;
      await new Promise((res) => setTimeout(res, 5));
    }
    await h.assertClean();
  });

  test('a report for a stick that was pulled is refused', { skip: ext4 }, async () => {
    const stick = await makeStick('ext4', 'PULLED', { 'p.umbra-bundle': 'p' });
    const h = await harness();
    await h.watcher.start();
    await h.insert(stick.device);
    await h.outcomes(1);
    sh('losetup', ['-d', stick.device]);
    attached.splice(attached.indexOf(stick.device), 1);
    await assert.rejects(h.bundles[0]!.writeReport('x'), /the stick PULLED was removed/);
    await h.assertClean();
  });
});
