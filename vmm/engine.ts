// Which execution engine a VM runs on: hardware-assisted KVM only where this host has real
// hardware virtualization and a guest was seen to run under it; QEMU's binary translation (TCG)
// everywhere else. A /dev/kvm alone proves nothing: a paravirtual software KVM such as PVM
// provides one without VT-x/AMD-V, and stock guests hang under it.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export type Engine = 'kvm' | 'tcg';
export interface EngineProbe { engine: Engine; reason: string }

/** What the probe reads from the host; separate so that the decision can be shown for any host. */
export interface HostFacts {
  kvmDevice: 'absent' | 'unopenable' | 'ok';
  cpuFlags: Set<string>;
  kvmModules: string[];
}

export function readHostFacts(): HostFacts {
  let kvmDevice: HostFacts['kvmDevice'] = 'absent';
  if (fs.existsSync('/dev/kvm')) {
    try {
      fs.closeSync(fs.openSync('/dev/kvm', 'r+'));
      kvmDevice = 'ok';
    } catch {
      kvmDevice = 'unopenable';
    }
  }
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const flagsLine = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '';
  const kvmModules = fs.existsSync('/sys/module') ? fs.readdirSync('/sys/module').filter((m) => m.startsWith('kvm')) : [];
  return { kvmDevice, cpuFlags: new Set(flagsLine.trim().split(/\s+/)), kvmModules };
}

/** The decision before any guest is run: TCG with its reason, or null when KVM may be tried. */
export function ruleOutKvm(facts: HostFacts): EngineProbe | null {
  if (facts.kvmDevice === 'absent') return { engine: 'tcg', reason: 'no /dev/kvm on this host' };
  if (facts.kvmDevice === 'unopenable') return { engine: 'tcg', reason: '/dev/kvm exists but this process may not open it' };
  if (!facts.cpuFlags.has('vmx') && !facts.cpuFlags.has('svm')) {
    const software = facts.kvmModules.filter((m) => m !== 'kvm');
    const provider = software.length ? ` (it is provided by ${software.join(', ')}, a software implementation)` : '';
    return {
      engine: 'tcg',
      reason: `the CPU has no hardware virtualization (no vmx or svm flag), so /dev/kvm${provider} cannot run stock guests`,
    };
  }
  return null;
}

let cached: Promise<EngineProbe> | null = null;

/** Probes once per process: host facts first, then a tiny guest that must run under KVM. */
export function probeEngine(): Promise<EngineProbe> {
  cached ??= (async () => {
    const ruledOut = ruleOutKvm(readHostFacts());
    if (ruledOut) return ruledOut;
    const check = await runProbeGuest('kvm');
    return check.ok
      ? { engine: 'kvm', reason: 'the CPU has hardware virtualization and a test guest ran under KVM' }
      : { engine: 'tcg', reason: `KVM is present but a test guest failed under it: ${check.detail}` };
  })();
  return cached;
}

const PROBE_MARKER = 'VSERVER-ENGINE-OK';

/**
 * A boot sector that writes the marker to COM1 and leaves through QEMU's isa-debug-exit port:
 *   cld; xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
 *   next: lodsb; test al,al; jz done; out dx,al; jmp next
 *   done: mov al,0; out 0xf4,al; hlt; jmp $-1
 *   msg: "VSERVER-ENGINE-OK\n", 0
 */
function probeBootSector(): Buffer {
  const sector = Buffer.alloc(512);
  Buffer.from([0xfc, 0x31, 0xc0, 0x8e, 0xd8, 0xbe, 0x1a, 0x7c, 0xba, 0xf8, 0x03, 0xac, 0x84, 0xc0, 0x74, 0x03,
    0xee, 0xeb, 0xf8, 0xb0, 0x00, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]).copy(sector, 0);
  Buffer.from(`${PROBE_MARKER}\n\0`).copy(sector, 0x1a);
  sector.writeUInt16LE(0xaa55, 510);
  return sector;
}

/** Boots the probe sector under the given accelerator; ok when the marker arrives and QEMU exits through the port. */
export async function runProbeGuest(accel: Engine, timeoutMs = 20_000): Promise<{ ok: boolean; detail: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-engine-'));
  const image = path.join(dir, 'probe.img');
  fs.writeFileSync(image, probeBootSector());
  try {
    return await new Promise((resolve) => {
      const qemu = spawn('qemu-system-x86_64', ['-accel', accel, '-M', 'pc', '-nodefaults', '-no-user-config', '-display', 'none',
        '-m', '16', '-drive', `file=${image},format=raw,if=ide`, '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4'],
      { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      qemu.stdout.on('data', (d: Buffer) => { output += d.toString(); });
      qemu.stderr.on('data', (d: Buffer) => { output += d.toString(); });
      const timer = setTimeout(() => qemu.kill('SIGKILL'), timeoutMs);
      qemu.on('error', (e) => { clearTimeout(timer); resolve({ ok: false, detail: `qemu-system-x86_64 could not start: ${e.message}` }); });
      // 'close', not 'exit': the marker may still be in the pipe when the process has exited.
      qemu.on('close', (code, signal) => {
        clearTimeout(timer);
        // isa-debug-exit turns the value 0 into exit status 1.
        if (code === 1 && output.includes(PROBE_MARKER)) resolve({ ok: true, detail: 'ran' });
        else if (signal === 'SIGKILL') resolve({ ok: false, detail: `it did not finish within ${timeoutMs / 1000} s` });
        else resolve({ ok: false, detail: `QEMU exited with ${signal ?? `status ${code}`}: ${output.trim().slice(-300)}` });
      });
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The engine a VM with the given choice runs on. Asking for KVM where the probe refused it is an error. */
export async function chooseEngine(choice: 'auto' | Engine): Promise<EngineProbe> {
  if (choice === 'tcg') return { engine: 'tcg', reason: 'the VM is configured for binary translation (TCG)' };
  const probe = await probeEngine();
  if (choice === 'kvm' && probe.engine !== 'kvm') throw new Error(`this VM asks for KVM, but this host cannot run it: ${probe.reason}`);
  return probe;
}
