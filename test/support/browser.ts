// A real headless Chromium for console tests: Debian's chromium package driven by playwright-core
// (no browser is downloaded), with a fresh empty profile, no network services of its own, and
// screenshots saved under test-artifacts/console/ (kept by CI as artifacts, ignored by git).
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type BrowserContext, chromium, type Locator, type Page } from "playwright-core";

export const CHROMIUM = process.env.FLEETSPEAK_TEST_CHROMIUM ?? "/usr/bin/chromium";
export const SCREENSHOT_DIR = resolve(import.meta.dirname, "../../test-artifacts/console");

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface TestBrowser {
  context: BrowserContext;
  newPage(): Promise<Page>;
  /** Saves a full-page screenshot as test-artifacts/console/<name>.png; returns its path. */
  screenshot(page: Page, name: string): Promise<string>;
  close(): Promise<void>;
}

export async function launchBrowser(opts: { ignoreHttpsErrors?: boolean } = {}): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `no Chromium at ${CHROMIUM}: install Debian's package (apt-get install chromium; .ci/run does) or set FLEETSPEAK_TEST_CHROMIUM`,
    );
  }
  const profile = mkdtempSync(join(tmpdir(), "fs-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1400, height: 900 },
    ...(opts.ignoreHttpsErrors ? { ignoreHTTPSErrors: true } : {}),
  });
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  return {
    context,
    newPage: () => context.newPage(),
    async screenshot(page, name) {
      const path = join(SCREENSHOT_DIR, `${name}.png`);
      await page.screenshot({ path, fullPage: true });
      return path;
    },
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** The text a person sees in an element (rendered: hidden parts left out, cells split by tabs). */
export function visibleText(l: Locator): Promise<string> {
  // biome-ignore lint/performance/useDomNodeTextContent: Playwright's innerText, not the DOM property: what is rendered is what the tests check.
  return l.innerText();
}

/** Loads a console page and waits until its script has run (charts drawn). */
export async function openPage(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]", { timeout: 10_000 });
}

/** Reloads the page until `check` passes (the console's data changes between loads, not live). */
export async function reloadUntil(page: Page, url: string, what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await openPage(page, url);
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`the console never showed ${what} at ${url}; last page text:\n${(await visibleText(page.locator("main"))).slice(0, 3000)}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}
