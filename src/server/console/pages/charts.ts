// Charts travel to the page as data (a JSON block), and /assets/console.js draws them with uPlot.
// uPlot wants every series on one shared x axis, so series sampled at different times are merged
// onto the union of their times, with gaps where a series has no point.

export interface ChartSeries {
  label: string;
  values: Array<number | null>;
  /** Drawn against the right-hand axis (another unit). */
  right?: boolean;
}

export interface ChartSpec {
  title: string;
  /** Unix seconds, ascending. */
  x: number[];
  series: ChartSeries[];
  /** Unit of the right-hand axis, when a series uses it. */
  rightUnit?: string;
}

export function alignSeries(
  input: Array<{ label: string; points: Array<[number, number]>; right?: boolean }>,
): Pick<ChartSpec, "x" | "series"> {
  const x = [...new Set(input.flatMap((s) => s.points.map(([t]) => t)))].sort((a, b) => a - b);
  const index = new Map(x.map((t, i) => [t, i]));
  const series = input.map((s) => {
    const values: Array<number | null> = new Array(x.length).fill(null);
    for (const [t, v] of s.points) values[index.get(t)!] = v;
    return { label: s.label, values, ...(s.right ? { right: true } : {}) };
  });
  return { x, series };
}
