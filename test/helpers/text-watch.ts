// Text that keeps arriving (a serial console) and tests that wait for a pattern in it: each
// wait looks from a given index on, wakes on every new piece, and fails with what was seen when
// the time is up or the source has ended.

export interface Match {
  /** Where the match starts in the whole text. */
  index: number;
  text: string;
}

export class TextWatch {
  text = '';
  private ended: string | null = null;
  private waiters: Array<() => void> = [];

  /**
   * @param where what the text is, for messages ("the serial console")
   * @param context what a failure adds to help (the last output, a log)
   */
  constructor(private readonly where: string, private readonly context: () => string) {}

  append(piece: string): void {
    this.text += piece;
    this.wake();
  }

  /** No more text will come; waits still pending fail with `why`. */
  end(why: string): void {
    this.ended ??= why;
    this.wake();
  }

  /** The first match of `pattern` at or after `from`. */
  waitFor(pattern: string | RegExp, timeoutMs: number, from = 0): Promise<Match> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`${String(pattern)} did not appear on ${this.where} within ${timeoutMs} ms\n${this.context()}`));
      }, timeoutMs);
      const check = (): void => {
        const found = find(this.text, pattern, from);
        if (found) {
          clearTimeout(timer);
          resolve(found);
        } else if (this.ended) {
          clearTimeout(timer);
          reject(new Error(`${this.ended} before ${String(pattern)} appeared on ${this.where}\n${this.context()}`));
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }

  private wake(): void {
    const pending = this.waiters;
    this.waiters = [];
    for (const w of pending) w();
  }
}

function find(text: string, pattern: string | RegExp, from: number): Match | null {
  const rest = text.slice(from);
  if (typeof pattern === 'string') {
    const i = rest.indexOf(pattern);
    return i >= 0 ? { index: from + i, text: pattern } : null;
  }
  // A copy without the g flag: exec on a global pattern would start at its lastIndex.
  const m = new RegExp(pattern.source, pattern.flags.replace('g', '')).exec(rest);
  return m ? { index: from + m.index, text: m[0] } : null;
}
