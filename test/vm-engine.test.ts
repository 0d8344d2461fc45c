// The execution engine: KVM only where the CPU has hardware virtualization (a /dev/kvm alone
// proves nothing: PVM, a software KVM, provides one), TCG everywhere else. The decision for
// synthetic hosts, the decision on this host (a PVM /dev/kvm without vmx or svm), the probe
// guest really booting under TCG, and what a VM's engine choice turns into.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { type HostFacts, chooseEngine, probeEngine, readHostFacts, ruleOutKvm, runProbeGuest } from '../vmm/engine.js';
import { makeTempDir, removeDir } from './helpers/vhd-fixtures.js';

function facts(overrides: Partial<HostFacts>): HostFacts {
  return { kvmDevice: 'ok', cpuFlags: new Set(['fpu', 'sse2', 'lm']), kvmModules: ['kvm'], ...overrides };
}

/** ruleOutKvm must choose TCG for these facts; returns its reason. */
function tcgReason(host: HostFacts): string {
  const decision = ruleOutKvm(host);
  assert.ok(decision, 'KVM was not ruled out');
  assert.equal(decision.engine, 'tcg');
  return decision.reason;
}

/** The flags line of /proc/cpuinfo, as this test reads it. */
function hostCpuFlags(): Set<string> {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  return new Set((/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '').trim().split(/\s+/).filter(Boolean));
}

const hostHasHardwareVirtualization = hostCpuFlags().has('vmx') || hostCpuFlags().has('svm');
const NEEDS_NO_VMX = hostHasHardwareVirtualization
  ? 'this host\'s CPU has vmx or svm: the engine may rightly choose KVM here, and these tests are about a host without them'
  : false;

// Runs first, before anything in this process has called probeEngine (which caches its answer).
describe('chooseEngine("tcg")', () => {
  test('returns TCG at once, without looking at /dev/kvm or the CPU', async (t) => {
    const existsSync = t.mock.method(fs, 'existsSync');
    const readFileSync = t.mock.method(fs, 'readFileSync');
    const choice = await chooseEngine('tcg');
    assert.deepEqual(choice, { engine: 'tcg', reason: 'the VM is configured for binary translation (TCG)' });
    assert.deepEqual(existsSync.mock.calls.map((c) => c.arguments[0]).filter((p) => p === '/dev/kvm' || p === '/proc/cpuinfo'), []);
    assert.deepEqual(readFileSync.mock.calls.map((c) => c.arguments[0]).filter((p) => p === '/proc/cpuinfo'), []);
    // The spies do see the engine's reads: the first "auto" choice probes the host.
    await chooseEngine('auto');
    assert.ok(existsSync.mock.calls.some((c) => c.arguments[0] === '/dev/kvm'), 'the probe looked for /dev/kvm');
  });
});

describe('ruleOutKvm: the decision from host facts', () => {
  test('no /dev/kvm: TCG, saying so', () => {
    assert.deepEqual(ruleOutKvm(facts({ kvmDevice: 'absent', cpuFlags: new Set(['vmx']), kvmModules: [] })),
      { engine: 'tcg', reason: 'no /dev/kvm on this host' });
  });

  test('a /dev/kvm this process may not open: TCG, saying so', () => {
    assert.equal(tcgReason(facts({ kvmDevice: 'unopenable', cpuFlags: new Set(['vmx']) })), '/dev/kvm exists but this process may not open it');
  });

  test('a /dev/kvm from kvm_pvm on a CPU without vmx or svm: TCG, naming kvm_pvm and the missing flags', () => {
    const reason = tcgReason(facts({ kvmModules: ['kvm', 'kvm_pvm'] }));
    assert.match(reason, /no hardware virtualization/);
    assert.match(reason, /no vmx or svm/);
    assert.match(reason, /kvm_pvm/);
  });

  test('a /dev/kvm without vmx or svm and no other kvm module: TCG, without naming a provider', () => {
    const reason = tcgReason(facts({ kvmModules: ['kvm'] }));
    assert.match(reason, /no vmx or svm/);
    assert.doesNotMatch(reason, /provided by/);
  });

  test('a /dev/kvm on a CPU with vmx (Intel VT-x) or svm (AMD-V): no decision yet, KVM may be tried', () => {
    assert.equal(ruleOutKvm(facts({ cpuFlags: new Set(['fpu', 'vmx']), kvmModules: ['kvm', 'kvm_intel'] })), null);
    assert.equal(ruleOutKvm(facts({ cpuFlags: new Set(['fpu', 'svm']), kvmModules: ['kvm', 'kvm_amd'] })), null);
  });
});

describe('this host', () => {
  test('readHostFacts reads /dev/kvm, the CPU flags of /proc/cpuinfo and the kvm* modules', () => {
    const host = readHostFacts();
    assert.equal(host.kvmDevice === 'absent', !fs.existsSync('/dev/kvm'));
    assert.deepEqual([...host.cpuFlags].filter(Boolean).sort(), [...hostCpuFlags()].sort());
    const modules = fs.existsSync('/sys/module') ? fs.readdirSync('/sys/module').filter((m) => m.startsWith('kvm')) : [];
    assert.deepEqual([...host.kvmModules].sort(), modules.sort());
  });

  test('probeEngine chooses TCG because the CPU has no hardware virtualization', { skip: NEEDS_NO_VMX }, async () => {
    const probe = await probeEngine();
    assert.equal(probe.engine, 'tcg');
    if (fs.existsSync('/dev/kvm')) {
      assert.match(probe.reason, /no hardware virtualization \(no vmx or svm flag\)/);
      if (fs.existsSync('/sys/module/kvm_pvm')) assert.match(probe.reason, /kvm_pvm/, 'the software KVM is named');
    } else {
      assert.equal(probe.reason, 'no /dev/kvm on this host');
    }
    assert.equal(probeEngine(), probeEngine(), 'the probe runs once per process');
  });

  test('chooseEngine("auto") runs on what the probe chose', { skip: NEEDS_NO_VMX }, async () => {
    assert.deepEqual(await chooseEngine('auto'), await probeEngine());
  });

  test('chooseEngine("kvm") is refused, naming the reason', { skip: NEEDS_NO_VMX }, async () => {
    const { reason } = await probeEngine();
    await assert.rejects(chooseEngine('kvm'), (e: Error) => {
      assert.equal(e.message, `this VM asks for KVM, but this host cannot run it: ${reason}`);
      return true;
    });
  });
});

describe('runProbeGuest: the functional check', () => {
  test('the probe sector boots under TCG, writes its marker to COM1 and leaves through isa-debug-exit; its image is removed', { timeout: 60_000 }, async (t) => {
    const mkdtemp = t.mock.method(fs, 'mkdtempSync');
    assert.deepEqual(await runProbeGuest('tcg', 30_000), { ok: true, detail: 'ran' });
    assert.equal(mkdtemp.mock.callCount(), 1);
    const dir = String(mkdtemp.mock.calls[0].result);
    assert.match(path.basename(dir), /^vserver-engine-/);
    assert.equal(fs.existsSync(dir), false, `${dir} is left behind`);
  });

  test('a guest that does not finish in time is reported as such, not left running', { timeout: 30_000 }, async () => {
    const result = await runProbeGuest('tcg', 1);
    assert.equal(result.ok, false);
    assert.equal(result.detail, 'it did not finish within 0.001 s');
  });

  test('QEMU that cannot be started, or that fails, is reported with its reason', { timeout: 30_000 }, async () => {
    const bin = makeTempDir('engine-bin');
    const savedPath = process.env.PATH;
    try {
      process.env.PATH = bin;
      const missing = await runProbeGuest('tcg');
      assert.equal(missing.ok, false);
      assert.match(missing.detail, /^qemu-system-x86_64 could not start: .*ENOENT/);

      const fake = path.join(bin, 'qemu-system-x86_64');
      fs.writeFileSync(fake, '#!/bin/sh\necho "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied" >&2\nexit 1\n', { mode: 0o755 });
      process.env.PATH = `${bin}:${savedPath ?? ''}`;
      const failing = await runProbeGuest('kvm');
      assert.equal(failing.ok, false);
      assert.equal(failing.detail, 'QEMU exited with status 1: qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied');
    } finally {
      process.env.PATH = savedPath;
      removeDir(bin);
    }
  });

  // Node may report the exit before the child's output is drained; a fake QEMU whose output
  // arrives after its exit makes that certain.
  test('the verdict waits for all of QEMU\'s output, not just its exit', { timeout: 30_000 }, async () => {
    const bin = makeTempDir('engine-late');
    const savedPath = process.env.PATH;
    const fake = path.join(bin, 'qemu-system-x86_64');
    try {
      process.env.PATH = `${bin}:${savedPath ?? ''}`;
      fs.writeFileSync(fake, '#!/bin/sh\n(sleep 0.3; echo VSERVER-ENGINE-OK) &\nexit 1\n', { mode: 0o755 });
      assert.deepEqual(await runProbeGuest('kvm'), { ok: true, detail: 'ran' }, 'the marker still counts when it arrives after the exit');
      fs.writeFileSync(fake, '#!/bin/sh\n(sleep 0.3; echo "qemu-system-x86_64: failed to initialize kvm" >&2) &\nexit 1\n', { mode: 0o755 });
      assert.deepEqual(await runProbeGuest('kvm'), { ok: false, detail: 'QEMU exited with status 1: qemu-system-x86_64: failed to initialize kvm' });
    } finally {
      process.env.PATH = savedPath;
      removeDir(bin);
    }
  });
});
