// A counter's history (the API's ...History arrays: a value per sample interval, newest last)
// drawn as an inline SVG line chart on the server, so the page needs no chart library and no
// script. Colours come from classes in static/site.css (an inline style would break the CSP).

export interface Sample { time: string; value: number }
export interface Series { label: string; samples: readonly Sample[] }

const WIDTH = 640;
const HEIGHT = 160;
const LEFT = 64;
const BOTTOM = 20;
const TOP = 8;

const escape = (text: string): string => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** 1536 as "1.5 K": the axis's labels. */
function short(value: number): string {
  const units = ['', ' K', ' M', ' G', ' T'];
  let v = value;
  let unit = 0;
  while (v >= 1000 && unit < units.length - 1) {
    v /= 1000;
    unit += 1;
  }
  return `${Number(v.toFixed(v < 10 && unit > 0 ? 1 : 0))}${units[unit]}`;
}

/** "08:41:05" from an ISO time. */
const clock = (iso: string): string => (/T(\d\d:\d\d:\d\d)/.exec(iso)?.[1] ?? iso);

/**
 * An SVG chart of the series (up to four, told apart by the classes series-0 ... series-3), with
 * its title for assistive technology and the peak on the vertical axis. No samples gives a chart
 * that says so.
 */
export function historyChart(title: string, unit: string, series: readonly Series[]): string {
  const count = Math.max(0, ...series.map((s) => s.samples.length));
  const peak = Math.max(1, ...series.flatMap((s) => s.samples.map((p) => p.value)));
  const plotWidth = WIDTH - LEFT - 8;
  const plotHeight = HEIGHT - TOP - BOTTOM;
  const x = (i: number, n: number): number => LEFT + (n <= 1 ? plotWidth : (i * plotWidth) / (n - 1));
  const y = (value: number): number => TOP + plotHeight - (value / peak) * plotHeight;
  const out = [
    `<svg class="history-chart" role="img" viewBox="0 0 ${WIDTH} ${HEIGHT}" width="${WIDTH}" height="${HEIGHT}" aria-labelledby="${escape(idOf(title))}">`,
    `<title id="${escape(idOf(title))}">${escape(title)}: ${series.map((s) => `${s.label} ${short(s.samples.at(-1)?.value ?? 0)} ${unit}`).join(', ')} in the last interval</title>`,
    `<line class="axis" x1="${LEFT}" y1="${TOP}" x2="${LEFT}" y2="${TOP + plotHeight}"/>`,
    `<line class="axis" x1="${LEFT}" y1="${TOP + plotHeight}" x2="${WIDTH - 8}" y2="${TOP + plotHeight}"/>`,
    `<text class="axis-label" x="${LEFT - 4}" y="${TOP + 10}" text-anchor="end">${escape(short(peak))}</text>`,
    `<text class="axis-label" x="${LEFT - 4}" y="${TOP + plotHeight}" text-anchor="end">0</text>`,
  ];
  if (count === 0) {
    out.push(`<text class="axis-label" x="${LEFT + plotWidth / 2}" y="${TOP + plotHeight / 2}" text-anchor="middle">no samples yet</text>`);
  } else {
    const first = series.find((s) => s.samples.length === count)!.samples;
    out.push(`<text class="axis-label" x="${LEFT}" y="${HEIGHT - 4}">${escape(clock(first[0].time))}</text>`,
      `<text class="axis-label" x="${WIDTH - 8}" y="${HEIGHT - 4}" text-anchor="end">${escape(clock(first[count - 1].time))}</text>`);
    series.forEach((s, k) => {
      const n = s.samples.length;
      // Shorter series are the newest samples: they end at the right edge with the others.
      const points = s.samples.map((p, i) => `${x(i + count - n, count).toFixed(1)},${y(p.value).toFixed(1)}`).join(' ');
      if (n) out.push(`<polyline class="series-${k % 4}" fill="none" points="${points}"/>`);
    });
  }
  out.push('</svg>');
  return out.join('');
}

/** The legend beside a chart: each series' label with its colour. */
export function chartLegend(series: readonly Series[], unit: string): string {
  return `<ul class="chart-legend">${series.map((s, k) => `<li><span class="swatch series-${k % 4}" aria-hidden="true"></span>${escape(s.label)}: ${short(s.samples.at(-1)?.value ?? 0)} ${escape(unit)} in the last interval</li>`).join('')}</ul>`;
}

const idOf = (title: string): string => `chart-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
