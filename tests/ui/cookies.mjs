// The cookie transport in a real browser: a front-end page on its own
// origin (tests/ui/frontend/, served by the Rust test) logs in to keyturn by
// cookie, reads /profile, refreshes with X-CSRF-Token, is refused a POST
// without it and accepted with it (logout), and is refused /profile after.
// A page on an origin keyturn does not list is refused by CORS.
// Usage: node tests/ui/cookies.mjs FRONT_END_URL FOREIGN_URL API_URL USERNAME PASSWORD
// Prints one `RESULT {json}` line (see tests/api/browser.rs). Cookie values
// are never printed, only their attributes and lengths.
import { launch, report } from './browser.mjs';

const [front, foreign, api, username, password] = process.argv.slice(2);
const browser = await launch();
const { context } = browser;
const result = {};

/** The cookies as the browser holds them (playwright's view). */
async function cookies() {
  return (await context.cookies()).map((c) => ({
    name: c.name, domain: c.domain, path: c.path, expires: c.expires,
    httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite, value_length: c.value.length,
  })).sort((a, b) => a.name.localeCompare(b.name));
}

/** Clicks a button of the front-end and returns the outcome it shows. */
async function act(page, id) {
  const result = page.locator('#result');
  const before = Number(await result.getAttribute('data-seq'));
  await page.click(`#${id}`);
  await page.waitForFunction((n) => Number(document.querySelector('#result').dataset.seq) > n, before);
  return JSON.parse(await result.textContent());
}

async function open(origin) {
  const page = await context.newPage();
  await page.goto(`${origin}/?api=${encodeURIComponent(api)}`);
  return page;
}

try {
  const page = await open(front);
  await page.fill('#username', username);
  await page.fill('#password', password);
  result.login = await act(page, 'login');
  result.cookies_after_login = await cookies();
  result.profile = await act(page, 'profile');
  result.refresh = await act(page, 'refresh');
  result.cookies_after_refresh = await cookies();

  // Same site (127.0.0.1), origin not in KEYTURN_CORS_ORIGINS: the browser
  // sends the cookies but keeps the answer from the page.
  const stranger = await open(foreign);
  result.foreign_profile = await act(stranger, 'profile');
  await stranger.close();

  result.forged = await act(page, 'logout-forged');
  result.profile_after_forged = await act(page, 'profile');
  result.logout = await act(page, 'logout');
  result.cookies_after_logout = await cookies();
  result.profile_after_logout = await act(page, 'profile');
} catch (err) {
  result.script_error = String(err); // the Rust test shows what got this far
}
report(result);
await browser.close();
