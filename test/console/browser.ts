/**
 * Debian's Chromium driven by playwright-core for the console's browser tests: headless, no sandbox (the
 * tests run as root), nothing that reaches out (the machine has no internet: no component updates, sync or
 * background networking), a fresh profile each time. `netns` runs the browser inside a lab namespace (the
 * lab's client, where a console's browser sits on the management network), through a small wrapper that
 * enters it. Screenshots go to `LOCKSTEP_ARTIFACTS` (or a temporary directory), which the test prints.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type { Cleanup } from '../support/cleanup.js';

export const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/** No single browser step may wait longer: a test fails rather than hangs. */
export const STEP_TIMEOUT_MS = 20_000;

export interface Browser {
  context: BrowserContext;
  page: Page;
  /** Console errors and uncaught exceptions of every page (a CSP violation is one): the tests expect none. */
  problems: string[];
  /** Saves a full-page screenshot as `<artifacts>/<name>.png`; the path. */
  screenshot(name: string): Promise<string>;
  /** After a failure: a screenshot of every page still open (`failure-N.png`), whatever it shows. */
  failureShots(): Promise<void>;
}

/** The directory for this run's artifacts: `LOCKSTEP_ARTIFACTS/<label>`, or a fresh temporary one. */
export async function artifactsDir(label: string): Promise<string> {
  const base = process.env['LOCKSTEP_ARTIFACTS'];
  if (base !== undefined && base !== '') {
    const dir = path.join(base, label);
    await mkdir(dir, { recursive: true });
    return dir;
  }
  return mkdtemp(path.join(os.tmpdir(), `lockstep-${label}-`));
}

export async function launchBrowser(cleanup: Cleanup, artifacts: string, opts: { netns?: string } = {}): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (scripts/setup.sh does)`);
  const profile = await mkdtemp(path.join(os.tmpdir(), 'lockstep-chromium-'));
  cleanup.add(() => rm(profile, { recursive: true, force: true }));
  let executablePath = CHROMIUM;
  if (opts.netns !== undefined) {
    // playwright talks to the browser over inherited pipes, which nsenter's exec keeps.
    executablePath = path.join(profile, '..', `${path.basename(profile)}-in-${opts.netns}.sh`);
    await writeFile(executablePath, `#!/bin/sh\nexec nsenter --net=/run/netns/${opts.netns} -- ${CHROMIUM} "$@"\n`);
    await chmod(executablePath, 0o755);
    const wrapper = executablePath;
    cleanup.add(() => rm(wrapper, { force: true }));
  }
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    args: ARGS,
    headless: true,
    // The management API's certificate is self-signed (docs/api.md#certificate); its pinning is tested apart.
    ignoreHTTPSErrors: true,
    viewport: { width: 1400, height: 900 },
    timeout: 60_000,
  });
  cleanup.add(() => context.close());
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const problems: string[] = [];
  const watch = (p: Page): void => {
    p.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    // A confirm() is the operator saying yes.
    p.on('dialog', (d) => void d.accept());
  };
  context.on('page', watch);
  const page = context.pages()[0] ?? (await context.newPage());
  watch(page);
  return {
    context,
    page,
    problems,
    screenshot: async (name) => {
      const file = path.join(artifacts, `${name}.png`);
      await page.screenshot({ path: file, fullPage: true });
      return file;
    },
    failureShots: async () => {
      let n = 0;
      for (const p of context.pages()) await p.screenshot({ path: path.join(artifacts, `failure-${++n}.png`), fullPage: true }).catch(() => {});
    },
  };
}
