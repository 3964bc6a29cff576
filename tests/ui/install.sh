#!/usr/bin/env bash
# Installs what the browser tests (tests/api/browser.rs) need: Debian's
# chromium (apt-get; skipped when present) and a pinned playwright-core in
# target/tmp/browser-node (created once, reused). Never downloads a browser
# of its own (no `npx playwright install`).
set -euo pipefail
cd "$(dirname "$0")/../.."
PLAYWRIGHT_CORE_VERSION=1.65.1
dir=target/tmp/browser-node

if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v node >/dev/null && command -v npm >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
}
installed=$(node -p "require('./$dir/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_CORE_VERSION" ]; then
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error \
    "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null
fi
chromium --version
echo "playwright-core $(node -p "require('./$dir/node_modules/playwright-core/package.json').version")"
