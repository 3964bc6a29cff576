// The front-end's whole use of keyturn: every call is a credentialed
// cross-origin fetch (the cookies travel, the page never sees the tokens),
// and every state-changing call sends the CSRF value it reads from the
// keyturn_csrf cookie as X-CSRF-Token (docs/browser.md).
'use strict';

const api = new URLSearchParams(location.search).get('api');

function csrfValue() {
  const match = document.cookie.match(/(?:^|; )keyturn_csrf=([^;]*)/);
  return match ? match[1] : null;
}

async function call(method, path, { json, form, csrf } = {}) {
  const headers = {};
  let body;
  if (json) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  if (form) body = new URLSearchParams(form);
  if (csrf) headers['X-CSRF-Token'] = csrfValue() ?? '';
  try {
    const response = await fetch(api + path, { method, headers, body, credentials: 'include' });
    const text = await response.text();
    let parsed = null;
    try { parsed = JSON.parse(text); } catch { /* 204, or not JSON */ }
    return { status: response.status, body: parsed };
  } catch (err) {
    // What a page sees when CORS refuses it: a TypeError, no status.
    return { status: 0, error: String(err) };
  }
}

const actions = {
  login: () => call('POST', '/login', {
    json: {
      username: document.getElementById('username').value,
      password: document.getElementById('password').value,
      transport: 'cookie',
    },
  }),
  profile: () => call('GET', '/profile'),
  refresh: () => call('POST', '/oauth/token', { form: { grant_type: 'refresh_token' }, csrf: true }),
  logout: () => call('POST', '/logout', { csrf: true }),
  'logout-forged': () => call('POST', '/logout'),
};

// Each button shows its outcome in #result, with the cookies this page can
// read, and bumps data-seq so a driver knows the answer is in.
for (const [id, action] of Object.entries(actions)) {
  document.getElementById(id).addEventListener('click', async () => {
    const outcome = await action();
    outcome.action = id;
    outcome.document_cookie = document.cookie;
    const result = document.getElementById('result');
    result.textContent = JSON.stringify(outcome, null, 2);
    result.dataset.seq = String(Number(result.dataset.seq) + 1);
  });
}
