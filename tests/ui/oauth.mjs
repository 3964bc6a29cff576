// See README.md. Usage: node oauth.mjs BASE_URL CLIENT_ID CLIENT_SECRET
import { chromium } from 'playwright-core';
const [base, id, secret] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox','--disable-gpu','--disable-quic','--no-first-run','--disable-background-networking','--disable-component-update','--disable-sync'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 1200 } });
await page.goto(base + '/docs');
await page.click('button.authorize');
const basic = page.locator('.auth-container', { hasText: 'ClientBasicAuth' });
await basic.locator('input').nth(0).fill(id);
await basic.locator('input').nth(1).fill(secret);
await basic.locator('button.authorize').click();
await page.click('button.btn-done');
const op = page.locator('[id^="operations-"][id$="post_oauth_token"]');
await op.locator('.opblock-summary').click();
await op.locator('button.try-out__btn').click();
const grant = op.locator('tr[data-property-name="grant_type"] input, tr[data-property-name="grant_type"] select');
await grant.first().fill('client_credentials').catch(async () => { await grant.first().selectOption('client_credentials'); });
for (const f of ['refresh_token','scope','client_id','client_secret']) { await op.locator(`tr[data-property-name="${f}"] input`).first().fill(''); }
await op.locator('button.execute').click();
await op.locator('.live-responses-table tbody .response-col_status').first().waitFor();
console.log('oauth/token status', (await op.locator('.live-responses-table tbody .response-col_status').first().textContent()).trim());
console.log((await op.locator('.live-responses-table tbody .microlight').first().textContent()).slice(0, 120));
await op.screenshot({ path: 'oauth-token.png' });
await browser.close();
