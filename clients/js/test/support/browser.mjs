// Headless Debian Chromium driven by playwright-core (TOOLBOX "Browser"): no browser download, a fresh
// profile per launch, and every page's console errors and uncaught exceptions recorded for the tests.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { REPO } from "./servers.mjs";

export const CHROMIUM = process.env.EVENTCAST_CHROMIUM ?? "/usr/bin/chromium";
export const SCREENSHOTS = join(REPO, "clients", "js", "test-results");

export async function launch() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: run \`make system-deps\` (apt-get install chromium)`);
  }
  const profile = mkdtempSync(join(tmpdir(), "eventcast-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    viewport: { width: 1280, height: 900 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A new page that records console errors and page errors. */
export async function openPage(browser) {
  const page = await browser.context.newPage();
  const problems = { consoleErrors: [], pageErrors: [] };
  page.on("console", (message) => {
    if (message.type() === "error") problems.consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => problems.pageErrors.push(String(error)));
  return { page, problems };
}

/** Save a screenshot under clients/js/test-results/ and say where in the test output. */
export async function screenshot(page, t, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${new Date().toISOString().replace(/[:.]/g, "-")}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  t.diagnostic(`screenshot: ${path}`);
  console.log(`screenshot: ${path}`);
  return path;
}
