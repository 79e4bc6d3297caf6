// The trend page's arithmetic: a bucket width for a range, the history API's answer as uPlot's aligned
// columns. Tested in trend.test.ts.

export const BUCKETS: [string, number][] = [
  ["1s", 1_000], ["5s", 5_000], ["10s", 10_000], ["30s", 30_000], ["1m", 60_000], ["5m", 300_000],
  ["15m", 900_000], ["1h", 3_600_000], ["6h", 21_600_000], ["1d", 86_400_000],
];

/** The smallest bucket giving at most `points` buckets over [from, to) (ms). */
export function bucketFor(from: number, to: number, points = 600): string {
  const span = Math.max(1, to - from);
  for (const [name, ms] of BUCKETS) if (span / ms <= points) return name;
  return "1d";
}

export interface Bucket {
  time: string;
  avg?: number | null;
  min?: number | null;
  max?: number | null;
}

export interface Series {
  tag: string;
  unit: string | null;
  buckets?: Bucket[];
}

export interface HistoryAnswer {
  tag?: string;
  unit?: string | null;
  buckets?: Bucket[];
  series?: Series[];
  layer?: string;
}

/** One tag's answer and several tags' answer alike: the list of series. */
export function seriesOf(a: HistoryAnswer): Series[] {
  if (a.series) return a.series;
  if (a.tag !== undefined) return [{ tag: a.tag, unit: a.unit ?? null, buckets: a.buckets ?? [] }];
  return [];
}

/** uPlot's data: the union of the bucket times (seconds) and one column of averages per series. */
export function align(series: Series[]): [number[], ...(number | null)[][]] {
  const times = new Set<number>();
  for (const s of series) for (const b of s.buckets ?? []) times.add(Date.parse(b.time));
  const xs = [...times].sort((a, b) => a - b);
  const index = new Map(xs.map((t, i) => [t, i]));
  const cols = series.map((s) => {
    const col: (number | null)[] = new Array<number | null>(xs.length).fill(null);
    for (const b of s.buckets ?? []) {
      const i = index.get(Date.parse(b.time));
      if (i !== undefined) col[i] = b.avg ?? null;
    }
    return col;
  });
  return [xs.map((t) => t / 1000), ...cols];
}

/** `datetime-local` input text (local time, minutes) for ms, and back. */
export function toLocalInput(ms: number): string {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

export function fromLocalInput(text: string): number | null {
  const ms = new Date(text).getTime();
  return Number.isNaN(ms) ? null : ms;
}

/** The tags' names without the levels they all share ("press-1/temp" for two devices of one line). */
export function shortNames(tags: string[]): string[] {
  if (tags.length < 2) return tags.map((t) => t.split("/").slice(-2).join("/"));
  const split = tags.map((t) => t.split("/"));
  let common = 0;
  while (common < 5 && split.every((p) => p[common] === split[0]?.[common])) common++;
  return split.map((p) => p.slice(Math.min(common, p.length - 1)).join("/"));
}

/** An axis number in at most about six characters (12.5k, 3.2M). */
export function compact(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toPrecision(3)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  return String(+v.toPrecision(4));
}
