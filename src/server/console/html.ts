// HTML for the console, built so that nothing from the database can become markup: every value
// put into an `html` template is escaped unless it is itself the output of `html`. Labels,
// service names, addresses and failure reasons come from clients and integrators, so a label
// "<script>" must show as text, never run. (The Content-Security-Policy header is the second
// line of defence: no inline script runs even if escaping were missed.)

/** Markup that is safe to insert as is: only `html` and `joinHtml` make it. */
export class SafeHtml {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

type Value = SafeHtml | string | number | bigint | boolean | null | undefined | readonly Value[];

function render(v: Value): string {
  if (v === null || v === undefined || v === false) return "";
  if (v instanceof SafeHtml) return v.text;
  if (Array.isArray(v)) return v.map(render).join("");
  return escapeHtml(String(v));
}

/** A template whose interpolations are escaped (arrays are rendered item by item). */
export function html(strings: TemplateStringsArray, ...values: Value[]): SafeHtml {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1]!;
  return new SafeHtml(out);
}

/**
 * Data for the page's script, in a non-executing <script type="application/json"> block; "<" is
 * written as \u003c so that no value can close the block.
 */
export function jsonBlock(id: string, data: unknown): SafeHtml {
  const json = JSON.stringify(data).replace(/</g, "\\u003c");
  return new SafeHtml(`<script type="application/json" id="${escapeHtml(id)}">${json}</script>`);
}
