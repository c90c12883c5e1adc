import { chromium, type Browser } from 'playwright-core';

/** Flags for a quiet headless Chromium in a container: no sandbox, GPU, QUIC or background traffic. */
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The system's headless Chromium (/usr/bin/chromium) through playwright-core, for the browser tests in test/e2e/. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: 120_000 });
}
