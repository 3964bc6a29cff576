// See README.md. Usage: node swagger.mjs BASE_URL [SCREENSHOT.png]
import { chromium } from 'playwright-core';
const base = process.argv[2];
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox','--disable-gpu','--disable-quic','--no-first-run','--disable-background-networking','--disable-component-update','--disable-sync'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 1200 } });
await page.goto(base + '/docs');
// 1. Log in through the UI.
await page.click('#operations-Auth-post_login .opblock-summary');
await page.click('#operations-Auth-post_login button.try-out__btn');
await page.fill('#operations-Auth-post_login textarea.body-param__text', JSON.stringify({username:'alice', password:'correct horse battery'}));
await page.click('#operations-Auth-post_login button.execute');
await page.waitForSelector('#operations-Auth-post_login .live-responses-table tbody .response-col_status');
const loginText = await page.textContent('#operations-Auth-post_login .live-responses-table .microlight');
const token = JSON.parse(loginText).access_token;
console.log('login status', await page.textContent('#operations-Auth-post_login .live-responses-table tbody .response-col_status'));
// 2. Authorize with the bearer token.
await page.click('button.authorize');
await page.fill('.auth-container input[type=text], .auth-container input:not([type])', token);
await page.click('.auth-container button.authorize');
await page.click('button.btn-done');
// 3. Call /admin/keys from the UI.
await page.click('#operations-Admin-get_admin_keys .opblock-summary');
await page.click('#operations-Admin-get_admin_keys button.try-out__btn');
await page.click('#operations-Admin-get_admin_keys button.execute');
await page.waitForSelector('#operations-Admin-get_admin_keys .live-responses-table tbody .response-col_status');
const status = await page.textContent('#operations-Admin-get_admin_keys .live-responses-table tbody .response-col_status');
console.log('admin/keys status', status.trim());
await page.locator('#operations-Admin-get_admin_keys').screenshot({ path: process.argv[3] ?? 'swagger-authorized.png' });
await browser.close();
