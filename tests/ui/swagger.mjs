// Swagger UI at /docs, as a newcomer uses it, with the page's defaults:
// 1. POST /login with the example body, Authorize with the bearer token,
//    GET /profile;
// 2. Authorize ClientBasicAuth with a client id and secret, then
//    POST /oauth/token with the form exactly as the page fills it.
// Usage: node tests/ui/swagger.mjs BASE_URL CLIENT_ID CLIENT_SECRET SCREENSHOT_DIR
// Prints one `RESULT {json}` line (see tests/api/browser.rs).
import { launch, report } from './browser.mjs';

const [base, clientId, clientSecret, shots] = process.argv.slice(2);
const browser = await launch();
const page = await browser.context.newPage();
const result = {};
const sent = {};
page.on('request', (r) => {
  const path = new URL(r.url()).pathname;
  if (r.method() === 'POST' || path === '/profile') {
    sent[path] = { body: r.postData() ?? '', authorization: (r.headers().authorization ?? '').split(' ')[0] };
  }
});

async function tryItOut(id) {
  const op = page.locator(`#${id}`);
  await op.locator('.opblock-summary').first().click();
  await op.locator('button.try-out__btn').click();
  return op;
}
async function execute(op) {
  await op.locator('button.execute').click();
  const status = op.locator('.live-responses-table tbody .response-col_status').first();
  await status.waitFor();
  const body = (await op.locator('.live-responses-table tbody .microlight').first().textContent()) ?? '';
  return { status: Number((await status.textContent()).trim()), body };
}
async function authorize(fill) {
  await page.locator('.scheme-container button.authorize').click();
  await fill(page.locator('.modal-ux'));
  await page.locator('.modal-ux button.btn-done').first().click();
}

await page.goto(base + '/docs');
await page.locator('.opblock-tag-section').first().waitFor();
result.title = (await page.locator('.info .title').textContent()).trim();
result.tags = await page.locator('.opblock-tag-section h3 .opblock-tag, .opblock-tag-section h3').evaluateAll(
  (hs) => hs.map((h) => h.getAttribute('data-tag') ?? h.textContent.trim()));

// 1. Log in with the page's example body, authorize the bearer token.
const login = await tryItOut('operations-Auth-post_login');
result.login_example = await login.locator('textarea.body-param__text').inputValue();
const loginResponse = await execute(login);
result.login_status = loginResponse.status;
result.login_body = loginResponse.body.slice(0, 300);
const token = JSON.parse(loginResponse.body).access_token;
if (!token) {
  report(result); // the Rust test shows what the page got
  await browser.close();
  process.exit(0);
}
await authorize(async (modal) => {
  const bearer = modal.locator('.auth-container', { hasText: 'BearerAuth' });
  await bearer.locator('input').first().fill(token);
  await bearer.locator('button.authorize').click();
});
const profile = await tryItOut('operations-Auth-get_profile');
const profileResponse = await execute(profile);
result.profile_status = profileResponse.status;
result.profile = JSON.parse(profileResponse.body);
result.profile_authorization = sent['/profile']?.authorization;

// 2. Client credentials, touching nothing but the Authorize dialog.
await authorize(async (modal) => {
  const basic = modal.locator('.auth-container', { hasText: 'ClientBasicAuth' });
  await basic.locator('input').nth(0).fill(clientId);
  await basic.locator('input').nth(1).fill(clientSecret);
  await basic.locator('button.authorize').click();
});
const token_op = await tryItOut('operations-OAuth-post_oauth_token');
const tokenResponse = await execute(token_op);
result.oauth_status = tokenResponse.status;
result.oauth_response = JSON.parse(tokenResponse.body);
result.oauth_sent = sent['/oauth/token'];
await token_op.scrollIntoViewIfNeeded();
await page.screenshot({ path: `${shots}/swagger-oauth-token.png`, fullPage: false });
await token_op.screenshot({ path: `${shots}/swagger-oauth-token-operation.png` });
report(result);
await browser.close();
