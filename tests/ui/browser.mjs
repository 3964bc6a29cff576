// Shared by the browser checks: finds playwright-core (installed by
// tests/ui/install.sh into target/tmp/browser-node, or PLAYWRIGHT_CORE_DIR)
// and starts Debian's chromium headless with a fresh profile and no
// background networking (this machine's network is closed).
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const nodeDir = process.env.PLAYWRIGHT_CORE_DIR ?? join(repo, 'target/tmp/browser-node');
const { chromium } = createRequire(join(nodeDir, 'package.json'))('playwright-core');

export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** A persistent context on a new empty --user-data-dir, removed by close(). */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'keyturn-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 1400 },
  });
  context.setDefaultTimeout(15000);
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Prints the one JSON result line the Rust test reads. */
export function report(result) {
  console.log('RESULT ' + JSON.stringify(result));
}
