// Traffic counters of adapters (TAPs) and networks, in the guest's view: what a guest sends
// arrives on its TAP (the TAP's rx), what it receives leaves by it (tx). A network's counters are
// the sums over the TAPs attached to it, accumulated sample by sample, so they never go down when
// an adapter detaches, a TAP is made anew or a VM stops; they and an hour of history are kept in
// <stateDir>/<id>/counters.json, written whole at every sample, so a killed vserverd loses none.

import fs from 'node:fs';
import path from 'node:path';
import { writeFileDurably } from '../../host/files.js';
import { readCounters, type InterfaceCounters } from './links.js';

export const COUNTER_NAMES = ['BytesSent', 'BytesReceived', 'BytesDropped', 'PacketsSent', 'PacketsReceived', 'PacketsDropped'] as const;
export type CounterName = typeof COUNTER_NAMES[number];
export type Counters = Record<CounterName, number>;

/** Sampling interval (the caller's timer) and how much history is kept. */
export const SAMPLE_INTERVAL_MS = 5_000;
export const HISTORY_SAMPLES = 3_600_000 / SAMPLE_INTERVAL_MS;

export interface HistoryPoint { time: string; value: number }

const FILE = 'counters.json';

interface NetworkRecord {
  totals: Counters;
  history: Record<CounterName, HistoryPoint[]>;
  /** Each attached TAP's own counters at the last sample, to count only what came since. */
  last: Record<string, InterfaceCounters>;
}

function zero(): Counters {
  return Object.fromEntries(COUNTER_NAMES.map((name) => [name, 0])) as Counters;
}

/** An adapter's counters in the guest's view, from its TAP's own counters. */
export function guestView(tap: InterfaceCounters): Counters {
  return {
    BytesSent: tap.rxBytes,
    BytesReceived: tap.txBytes,
    BytesDropped: 0,
    PacketsSent: tap.rxPackets,
    PacketsReceived: tap.txPackets,
    PacketsDropped: tap.rxDropped + tap.txDropped,
  };
}

/** An adapter's counters now (zeros while its TAP does not exist). */
export function adapterCounters(tap: string): Counters {
  const own = readCounters(tap);
  return own ? guestView(own) : zero();
}

export class NetworkCounters {
  private readonly networks = new Map<string, NetworkRecord>();
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly stateDir: string) {}

  private file(id: string): string {
    return path.join(this.stateDir, id, FILE);
  }

  private record(id: string): NetworkRecord {
    let record = this.networks.get(id);
    if (!record) {
      try {
        record = JSON.parse(fs.readFileSync(this.file(id), 'utf8')) as NetworkRecord;
      } catch {
        record = { totals: zero(), history: Object.fromEntries(COUNTER_NAMES.map((name) => [name, []])) as unknown as NetworkRecord['history'], last: {} };
      }
      this.networks.set(id, record);
    }
    return record;
  }

  /**
   * One sample: adds to each network what its attached TAPs counted since the last sample (a TAP
   * seen for the first time in a network counts from now; one whose counters went down was made
   * anew and counts from zero), appends a history point per counter, and writes each network's file.
   * `networks` lists every network to sample, so one without adapters still gets its zero point.
   */
  async sample(attachments: { tap: string; network: string }[], networks: string[] = []): Promise<void> {
    const time = new Date().toISOString();
    const ids = new Set([...networks, ...attachments.map((a) => a.network)]);
    for (const id of ids) {
      const record = this.record(id);
      const interval = zero();
      const last: Record<string, InterfaceCounters> = {};
      for (const { tap } of attachments.filter((a) => a.network === id)) {
        const now = readCounters(tap);
        if (!now) continue;
        const before = record.last[tap];
        if (before) {
          const reset = now.rxBytes < before.rxBytes || now.txBytes < before.txBytes || now.rxPackets < before.rxPackets || now.txPackets < before.txPackets;
          const [a, b] = [guestView(now), guestView(reset ? { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, rxDropped: 0, txDropped: 0 } : before)];
          for (const name of COUNTER_NAMES) interval[name] += Math.max(0, a[name] - b[name]);
        }
        last[tap] = now;
      }
      record.last = last;
      for (const name of COUNTER_NAMES) {
        record.totals[name] += interval[name];
        const history = record.history[name];
        history.push({ time, value: interval[name] });
        if (history.length > HISTORY_SAMPLES) history.splice(0, history.length - HISTORY_SAMPLES);
      }
    }
    // One write after another, so an older sample never lands over a newer one.
    const written = this.writing.then(() => Promise.all([...ids].map((id) => this.write(id))).then(() => undefined));
    this.writing = written.catch(() => undefined);
    await written;
  }

  private async write(id: string): Promise<void> {
    const file = this.file(id);
    if (!fs.existsSync(path.dirname(file))) return; // removed meanwhile
    await writeFileDurably(file, JSON.stringify(this.record(id)), { draft: `${file}.draft` });
  }

  /** A network's counters: totals since it was made. */
  network(id: string): Counters {
    return { ...this.record(id).totals };
  }

  /** A counter's history, oldest first: each point the amount of one sample interval. */
  history(id: string, name: CounterName): HistoryPoint[] {
    return [...this.record(id).history[name]];
  }

  /** Forgets a network (its folder is removed with it). */
  forget(id: string): void {
    this.networks.delete(id);
  }
}
