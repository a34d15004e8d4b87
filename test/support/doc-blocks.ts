// The fenced code blocks of the pages in docs/, for the tests that follow the pages: a block is
// found by its first line ("# fleetspeak.components.Config: frontend-1" is found as
// "fleetspeak.components.Config: frontend-1").
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const DOCS = resolve(import.meta.dirname, "../../docs");

export interface DocBlock {
  /** 1-based line of the block's first line. */
  line: number;
  /** Its first line without the leading "# ", or "" when it does not start with "# ". */
  title: string;
  text: string;
}

/** Every fenced block of docs/<page>, in order. */
export function docBlocks(page: string): DocBlock[] {
  const lines = readFileSync(join(DOCS, page), "utf8").split("\n");
  const out: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.startsWith("```")) continue;
    let end = i + 1;
    while (end < lines.length && !lines[end]!.startsWith("```")) end++;
    const body = lines.slice(i + 1, end);
    out.push({ line: i + 2, title: body[0]?.startsWith("# ") ? body[0].slice(2) : "", text: body.join("\n") });
    i = end;
  }
  return out;
}

/** The block of docs/<page> whose first line is "# <title>"; fails the test when there is none. */
export function docBlock(page: string, title: string): string {
  const b = docBlocks(page).find((x) => x.title === title);
  assert.ok(b, `docs/${page} has no block starting "# ${title}"`);
  return b.text;
}
