#!/usr/bin/env python3
"""Load test for the keyturn release binary, over loopback only: one command.

    python3 benches/load.py [--duration 8] [--binary PATH] [--no-write] [--scale]

1. builds the release binary and the sign_rate example (``cargo build
   --release``, honouring CARGO_TARGET_DIR; ``--binary PATH`` skips the
   build of the server);
2. starts keyturn (RS256, SQLite in a temp dir), a second keyturn with
   KEYTURN_SIGNING_ALG=EdDSA, and a third on a throwaway PostgreSQL
   database (unless --no-postgres); seeds an admin user with the CLI, users
   through POST /admin/users, and an OAuth client with the CLI
   (client_credentials and refresh_token grants);
3. starts nginx (2 workers) serving the same JWKS bytes;
4. measures the crypto limit (examples/sign_rate.rs: SigningKey::sign_jwt
   on every core) for RS256 and EdDSA;
5. drives every row with ``wrk -t1 -c32`` (``--duration`` s each) and prints
   one table: req/s, p50, p99, RSS of the keyturn process after the step,
   ratio against a baseline measured in the same run, target, pass/fail;
6. writes that table, the machine and the versions into docs/benchmarks.md
   (between the load.py markers; ``--no-write`` skips it);
7. with ``--scale``: seeds 100k users, 100k clients and 1M refresh tokens
   into the SQLite store and re-runs the login, refresh and
   client_credentials rows against the empty-store ones.

Standard library only. wrk, nginx and cargo must be installed; psql for
the PostgreSQL row. Every process it starts is stopped on exit, error,
Ctrl-C or SIGTERM, and its temp dirs and databases are removed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

HOST = "127.0.0.1"  # never anything else
ADMIN = "bench"
PASSWORD = "correct horse battery staple"
MARKER = "LOADJSON "
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs", "benchmarks.md")
BEGIN, END = "<!-- load.py:begin -->", "<!-- load.py:end -->"
JWKS = "/.well-known/jwks.json"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
# KEYTURN_REFRESH_SESSIONS_PER_USER defaults to 10: a user's 11th login
# revokes their oldest refresh family, so refresh tokens are seeded over
# several users, at most this many logins each.
SESSIONS_PER_USER = 8
MIB = 1024 * 1024


# --------------------------------------------------------------------------
# Helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(method: str, port: int, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30.0):
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def expect(what: str, status: int, raw: bytes, want: tuple[int, ...] = (200,)) -> dict:
    if status not in want:
        raise RuntimeError(f"{what}: HTTP {status} {raw[:300]!r}")
    return json.loads(raw) if raw else {}


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None,
               log: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}" + tail(log))
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s" + tail(log))


def tail(path: str | None, lines: int = 20) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "\n--- last lines of " + path + " ---\n" + "".join(f.readlines()[-lines:])


def rss_mib(pid: int) -> float:
    """VmRSS of a process, in MiB (NaN once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def command_output(argv: list[str], cwd: str = REPO) -> str:
    """The first line a command prints (stdout, else stderr), or "unknown"."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = done.stdout.strip() or done.stderr.strip()
    return text.splitlines()[0] if text else "unknown"


class Processes:
    """Every child we start, stopped in reverse order on exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        # Own session: Ctrl-C reaches us only, and we stop the children.
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        for entry in list(self.procs):
            if entry[1] is proc:
                self._stop([entry])
                self.procs.remove(entry)

    def stop_all(self) -> None:
        self._stop(list(reversed(self.procs)))
        self.procs.clear()

    @staticmethod
    def _stop(entries: list[tuple[str, subprocess.Popen]]) -> None:
        for _, proc in entries:
            if proc.poll() is None:
                proc.terminate()
        for name, proc in entries:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop on SIGTERM; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------
# Building


def target_dir() -> str:
    """Where cargo puts its output (CARGO_TARGET_DIR, .cargo/config, or target/)."""
    done = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["target_directory"]


def cargo_build(extra: list[str]) -> None:
    argv = ["cargo", "build", "--release", *extra]
    print(f"$ {shlex.join(argv)}", flush=True)
    done = subprocess.run(argv, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed with {done.returncode}")


def build(binary: str | None, sign_rate: str | None) -> tuple[str, str]:
    """The keyturn binary and the sign_rate example, built unless given."""
    release = os.path.join(target_dir(), "release")
    if binary is None:
        cargo_build([])
        binary = os.path.join(release, "keyturn")
    if sign_rate is None:
        cargo_build(["--example", "sign_rate"])
        sign_rate = os.path.join(release, "examples", "sign_rate")
    for path in (binary, sign_rate):
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path}: not an executable")
    return os.path.abspath(binary), os.path.abspath(sign_rate)


def crypto_limit(sign_rate: str, seconds: float) -> dict[str, dict]:
    """signatures/s of SigningKey::sign_jwt on every core, per algorithm."""
    done = subprocess.run([sign_rate, "--seconds", str(seconds)], capture_output=True,
                          text=True, timeout=120 + 4 * seconds)
    if done.returncode != 0:
        raise RuntimeError(f"sign_rate failed:\n{done.stdout}{done.stderr}")
    return {r["alg"]: r for r in (json.loads(line) for line in done.stdout.splitlines() if line)}


# --------------------------------------------------------------------------
# keyturn instances


@dataclass
class Keyturn:
    name: str
    binary: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen
    log: str
    admin_token: str = ""
    users: list[str] = field(default_factory=list)
    clients: list[tuple[str, str]] = field(default_factory=list)
    rss_start: float = float("nan")

    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([self.binary, *args], env=self.env, input=stdin, text=True,
                              capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"keyturn {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def login(self, username: str, password: str = PASSWORD) -> dict:
        body = json.dumps({"username": username, "password": password}).encode()
        return expect(f"{self.name}: login {username}",
                      *http("POST", self.port, "/login", body, JSON))

    def basic(self) -> dict[str, str]:
        client_id, secret = self.clients[0]
        raw = f"{client_id}:{secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def client_forms(self, **params: str) -> list[str]:
        """One form body per client, credentials in the body (RFC 6749 §2.3.1)."""
        return [urllib.parse.urlencode({**params, "client_id": c, "client_secret": s})
                for c, s in self.clients]


def keyturn_env(workdir: str, port: int, database_url: str, alg: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KEYTURN_DATABASE_URL": database_url,
        "KEYTURN_KEYS_DIR": os.path.join(workdir, "keys"),
        "KEYTURN_BIND": f"{HOST}:{port}",
        "KEYTURN_ISSUER": f"http://{HOST}:{port}",
        "KEYTURN_SIGNING_ALG": alg,
    })
    return env


def start_keyturn(procs: Processes, binary: str, name: str, workdir: str,
                  database_url: str, alg: str, port: int | None = None) -> Keyturn:
    """`keyturn serve` with default settings on its own store; waits for /ready."""
    os.makedirs(workdir, exist_ok=True)
    port = port or free_port()
    env = keyturn_env(workdir, port, database_url, alg)
    log = os.path.join(workdir, "keyturn.log")
    with open(log, "ab") as out:
        proc = procs.start(f"keyturn:{name}", [binary, "serve"], env=env, stdout=out,
                           stderr=subprocess.STDOUT)
    wait_until(lambda: http("GET", port, "/ready")[0] == 200, 120, f"{name} /ready", proc, log)
    kt = Keyturn(name, binary, port, env, proc, log)
    time.sleep(0.5)
    kt.rss_start = kt.rss()
    return kt


def restart_keyturn(procs: Processes, kt: Keyturn) -> None:
    """Stops and starts the same instance (same port, store, keys)."""
    procs.stop(kt.proc)
    with open(kt.log, "ab") as out:
        kt.proc = procs.start(f"keyturn:{kt.name}", [kt.binary, "serve"], env=kt.env,
                              stdout=out, stderr=subprocess.STDOUT)
    wait_until(lambda: http("GET", kt.port, "/ready")[0] == 200, 300, f"{kt.name} /ready",
               kt.proc, kt.log)


def seed_admin(kt: Keyturn) -> None:
    """An admin user created with the CLI, and a token the server accepts."""
    kt.cli("users", "add", ADMIN, "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    kt.admin_token = kt.login(ADMIN)["access_token"]
    # A user created by the CLI reaches the server's in-memory user view by
    # polling (about a second); until then its tokens are refused.
    bearer = {"Authorization": f"Bearer {kt.admin_token}"}
    wait_until(lambda: http("GET", kt.port, "/profile", headers=bearer)[0] == 200, 15,
               f"{kt.name}: admin token accepted by /profile", kt.proc, kt.log)


def seed_users(kt: Keyturn, count: int, prefix: str = "load") -> None:
    """`count` users through POST /admin/users (argon2: two at a time)."""
    bearer = {"Authorization": f"Bearer {kt.admin_token}", **JSON}

    def add(i: int) -> str:
        name = f"{prefix}{i:04d}"
        body = json.dumps({"username": name, "password": PASSWORD, "roles": ["user"]})
        expect(f"{kt.name}: POST /admin/users {name}",
               *http("POST", kt.port, "/admin/users", body.encode(), bearer), want=(200, 201))
        return name

    with ThreadPoolExecutor(2) as pool:
        kt.users += list(pool.map(add, range(len(kt.users), len(kt.users) + count)))


def seed_clients(kt: Keyturn, count: int) -> None:
    """OAuth clients with both grants: the first with the CLI, the others
    through POST /admin/clients. Several, because client authentication is
    throttled per client id counting attempts in flight (5), so one client
    cannot have 32 token requests open at once."""
    out = kt.cli("--output", "json", "clients", "add", "load-client", "--scope", "read",
                 "--grant-type", "client_credentials", "--grant-type", "refresh_token")
    kt.clients = [("load-client", json.loads(out)["client_secret"])]
    bearer = {"Authorization": f"Bearer {kt.admin_token}", **JSON}
    for i in range(1, count):
        body = json.dumps({"client_id": f"load-client-{i:02d}", "scopes": ["read"],
                           "grant_types": ["client_credentials", "refresh_token"]})
        got = expect(f"{kt.name}: POST /admin/clients",
                     *http("POST", kt.port, "/admin/clients", body.encode(), bearer),
                     want=(200, 201))
        kt.clients.append((got["client_id"], got["client_secret"]))


def seed_refresh_tokens(kt: Keyturn, count: int) -> list[str]:
    """`count` live refresh tokens from /login, spread over the users."""
    need = -(-count // SESSIONS_PER_USER)
    if len(kt.users) < need:
        seed_users(kt, need - len(kt.users))
    names = [kt.users[i % need] for i in range(count)]
    # One login per user at a time: the throttle counts attempts in flight.
    with ThreadPoolExecutor(min(need, 4)) as pool:
        return [r["refresh_token"] for r in pool.map(kt.login, names)]


def client_token(kt: Keyturn) -> str:
    body = b"grant_type=client_credentials"
    got = expect(f"{kt.name}: client_credentials",
                 *http("POST", kt.port, "/oauth/token", body, {**FORM, **kt.basic()}))
    return got["access_token"]


def token_alg(token: str) -> str:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["alg"]


# --------------------------------------------------------------------------
# PostgreSQL: a throwaway database per run


def pg_admin_url(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in (HOST, "localhost"):
        raise RuntimeError(f"--postgres must point at {HOST}, not {parts.hostname}")
    return url, parts._replace(path="/{db}").geturl()


def psql(admin_url: str, sql: str) -> None:
    done = subprocess.run(["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")


# --------------------------------------------------------------------------
# nginx: the static baseline


NGINX_CONF = """
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  server {{
    listen {host}:{port};
    location = /.well-known/jwks.json {{
      default_type application/json;
      add_header Cache-Control "public, max-age=300";
      alias {dir}/jwks.json;
    }}
  }}
}}
"""


def start_nginx(procs: Processes, workdir: str, jwks: bytes, workers: int) -> int:
    # A directory of its own, readable by nginx workers (which drop to
    # nobody when started as root); keyturn's directories stay private.
    sdir = tempfile.mkdtemp(prefix="nginx-", dir=workdir)
    os.chmod(sdir, 0o755)
    path = os.path.join(sdir, "jwks.json")
    with open(path, "wb") as f:
        f.write(jwks)
    os.chmod(path, 0o644)
    port = free_port()
    conf = os.path.join(sdir, "nginx.conf")
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(workers=workers, dir=sdir, host=HOST, port=port, user=user))
    log = os.path.join(sdir, "error.log")
    proc = procs.start("nginx", ["nginx", "-p", sdir, "-e", log, "-c", conf],
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_until(lambda: http("GET", port, JWKS)[1] == jwks, 15, "nginx", proc, log)
    return port


# --------------------------------------------------------------------------
# wrk. Every script ends with the same done(), which prints one line:
# MARKER + JSON with requests, duration_us, p50_us, p99_us, max_us, errors
# (socket: connect, read, write, timeout), non_2xx (status > 399) and empty
# (refresh pool ran dry: a request went out without a token).


WRK_DONE = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local e, empty = summary.errors, 0
  for _, t in ipairs(threads) do empty = empty + (t:get("empty") or 0) end
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,"max_us":%.1f,' ..
    '"errors":%d,"non_2xx":%d,"empty":%d}\\n', [==[MARKER]==],
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.timeout, e.status, empty))
end
""".replace("MARKER", MARKER)

# Many request bodies, taken in turn (e.g. logins of many users: the
# throttle allows a few attempts in flight per username).
WRK_CYCLE = """
local bodies, reqs, n = {BODIES}, {}, 0
function init(args)
  for i, b in ipairs(bodies) do reqs[i] = wrk.format(nil, nil, nil, b) end
end
function request()
  n = n % #reqs + 1
  return reqs[n]
end
"""

# A pool of refresh tokens: each request takes one, each response gives
# back the rotated one (a used token would revoke its whole family).
WRK_REFRESH = """
local pool = {}
empty = 0
function init(args)
  for line in io.lines([==[FILE]==]) do
    if #line > 0 then pool[#pool + 1] = line end
  end
end
function request()
  local token = table.remove(pool)
  if token == nil then empty = empty + 1; token = "" end
  return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. token)
end
function response(status, headers, body)
  local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if token then pool[#pool + 1] = token end
end
"""


@dataclass
class Load:
    """One wrk run."""
    name: str
    port: int
    path: str
    connections: int
    duration: float
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    bodies: list[str] = field(default_factory=list)   # cycled, instead of body
    tokens: list[str] = field(default_factory=list)   # refresh pool, instead of body


def lua_str(s: str) -> str:
    if "]==]" in s:
        raise ValueError("unquotable string")
    return f"[==[{s}]==]"


def wrk_script(load: Load, workdir: str) -> str:
    lines = [f"wrk.method = {lua_str(load.method)}"]
    lines += [f"wrk.headers[ {lua_str(k)} ] = {lua_str(v)}" for k, v in load.headers.items()]
    if load.tokens:
        tokens = os.path.join(workdir, f"{load.name}.tokens")
        with open(tokens, "w") as f:
            f.write("\n".join(load.tokens) + "\n")
        lines.append(WRK_REFRESH.replace("FILE", tokens))
    elif load.bodies:
        lines.append(WRK_CYCLE.replace("{BODIES}", "{" + ", ".join(map(lua_str, load.bodies)) + "}"))
    elif load.body:
        lines.append(f"wrk.body = {lua_str(load.body)}")
    lines.append(WRK_DONE)
    script = os.path.join(workdir, f"{load.name}.lua")
    with open(script, "w") as f:
        f.write("\n".join(lines))
    return script


def start_wrk(procs: Processes, load: Load, workdir: str) -> subprocess.Popen:
    script = wrk_script(load, workdir)
    # One thread: the refresh pool lives in one Lua state, and the rows
    # compare like with like.
    argv = ["wrk", "-t1", f"-c{load.connections}", f"-d{load.duration:.0f}s",
            "--timeout", "10s", "-s", script, f"http://{HOST}:{load.port}{load.path}"]
    return procs.start(f"wrk:{load.name}", argv, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen, name: str) -> dict:
    out, err = proc.communicate(timeout=300)
    for line in out.splitlines():
        if line.startswith(MARKER):
            r = json.loads(line[len(MARKER):])
            secs = r["duration_us"] / 1e6
            return {"requests": r["requests"], "rps": r["requests"] / secs if secs else 0.0,
                    "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3,
                    "max_ms": r["max_us"] / 1e3, "errors": r["errors"],
                    "non_2xx": r["non_2xx"], "empty": r["empty"]}
    raise RuntimeError(f"wrk for {name} printed no result:\n{out}\n{err}")


class Runner:
    """Runs steps (wrk loads at the same time), records RSS after each."""

    def __init__(self, procs: Processes, workdir: str) -> None:
        self.procs, self.workdir = procs, workdir
        self.results: dict[str, dict] = {}

    def step(self, label: str, *loads: tuple[Keyturn | None, Load]) -> list[dict]:
        print(f"  {label} ({max(load.duration for _, load in loads):.0f} s) ...", flush=True)
        started = [start_wrk(self.procs, load, self.workdir) for _, load in loads]
        out = []
        for (kt, load), proc in zip(loads, started):
            result = collect(proc, load.name)
            self.procs.procs = [p for p in self.procs.procs if p[1] is not proc]
            out.append(result)
        for (kt, load), result in zip(loads, out):
            result["rss_mib"] = kt.rss() if kt is not None else float("nan")
            self.results[load.name] = result
        return out


# --------------------------------------------------------------------------
# The steps


def jwks_load(name: str, port: int, conns: int, d: float) -> Load:
    return Load(name, port, JWKS, conns, d)


def login_load(name: str, kt: Keyturn, users: list[str], conns: int, d: float) -> Load:
    bodies = [json.dumps({"username": u, "password": PASSWORD}) for u in users]
    return Load(name, kt.port, "/login", conns, d, "POST", dict(JSON), bodies=bodies)


def cc_load(name: str, kt: Keyturn, conns: int, d: float) -> Load:
    return Load(name, kt.port, "/oauth/token", conns, d, "POST", dict(FORM),
                bodies=kt.client_forms(grant_type="client_credentials"))


def refresh_load(name: str, kt: Keyturn, tokens: list[str], conns: int, d: float) -> Load:
    return Load(name, kt.port, "/oauth/token", conns, d, "POST", dict(FORM), tokens=tokens)


def run_steps(run: Runner, args, rs: Keyturn, ed: Keyturn, pg: Keyturn | None,
              nginx_port: int, seeds: dict) -> None:
    d, c = args.duration, args.connections
    run.step("warm-up", (rs, jwks_load("warm", rs.port, c, 2)),
             (ed, jwks_load("warm_ed", ed.port, c, 2)))
    run.step("nginx JWKS", (None, jwks_load("nginx", nginx_port, c, d)))
    run.step("JWKS RS256", (rs, jwks_load("jwks", rs.port, c, d)))
    bearer = {"Authorization": f"Bearer {seeds['user_token']}"}
    run.step("/profile", (rs, Load("profile", rs.port, "/profile", c, d, headers=bearer)))
    run.step("client_credentials RS256", (rs, cc_load("cc_rs", rs, c, d)))
    run.step("introspect", (rs, Load("introspect", rs.port, "/oauth/introspect", c, d, "POST",
                                     dict(FORM),
                                     bodies=rs.client_forms(token=seeds["user_token"]))))
    run.step("refresh_token SQLite",
             (rs, refresh_load("refresh_sqlite", rs, seeds["refresh_sqlite"], args.refresh_connections, d)))
    run.step("JWKS EdDSA", (ed, jwks_load("jwks_ed", ed.port, c, d)))
    run.step("client_credentials EdDSA", (ed, cc_load("cc_ed", ed, c, d)))
    if pg is not None:
        run.step("refresh_token PostgreSQL",
                 (pg, refresh_load("refresh_pg", pg, seeds["refresh_pg"], args.refresh_connections, d)))
    run.results["rss_before_floods"] = {"rss_mib": rs.rss()}
    pc, lc = args.probe_connections, args.login_connections
    run.step("JWKS probe, idle", (rs, jwks_load("probe", rs.port, pc, d)))
    run.step("login flood 1 with the JWKS probe", (rs, jwks_load("probe_flood", rs.port, pc, d)),
             (rs, login_load("flood1", rs, rs.users, lc, d)))
    for i in range(2, 6):
        run.step(f"login flood {i}", (rs, login_load(f"flood{i}", rs, rs.users, lc, d)))


def run_scale_steps(run: Runner, args, rs: Keyturn, seeds: dict) -> None:
    d, c = args.duration, args.connections
    run.step("scale: login", (rs, login_load("scale_login", rs, rs.users, args.login_connections, d)))
    # The pool is taken after the login row: that row logs the same users in
    # hundreds of times, and each user's 11th login revokes their oldest
    # family (KEYTURN_REFRESH_SESSIONS_PER_USER), which would be the pool's.
    seeds["refresh_scale"] = seed_refresh_tokens(rs, 2 * args.refresh_connections)
    run.step("scale: refresh_token SQLite",
             (rs, refresh_load("scale_refresh", rs, seeds["refresh_scale"], args.refresh_connections, d)))
    run.step("scale: client_credentials RS256", (rs, cc_load("scale_cc", rs, c, d)))


# --------------------------------------------------------------------------
# The table


@dataclass
class Row:
    label: str
    result: dict | None = None      # a wrk result (rps, p50, p99, counts)
    rps: float | None = None        # for rows without a wrk run
    rss: float | None = None
    ratio: float | None = None
    target: str = ""
    meets: bool | None = None       # the target, if any
    note: str = ""

    @property
    def ok(self) -> bool | None:
        clean = None
        if self.result is not None:
            clean = not (self.result["non_2xx"] or self.result["errors"] or self.result["empty"])
        if self.meets is None:
            return clean
        return self.meets and clean is not False


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def build_rows(res: dict, crypto: dict, idle: dict, args, scale: dict | None) -> list[Row]:
    def r(key: str) -> dict:
        return res[key]

    def at_least(label: str, key: str, base: float, k: float, base_name: str) -> Row:
        q = ratio(r(key)["rps"], base)
        return Row(label, r(key), ratio=q, target=f">= {k} x {base_name}", meets=q >= k)

    rs_lim, ed_lim = crypto["RS256"]["signatures_per_s"], crypto["EdDSA"]["signatures_per_s"]
    threads = crypto["RS256"]["threads"]
    rows = [
        Row(f"crypto limit RS256 (sign_jwt, {threads} threads)", rps=rs_lim),
        Row(f"crypto limit EdDSA (sign_jwt, {threads} threads)", rps=ed_lim),
        Row("RSS idle, RS256 instance, at start", rss=idle["rs_start"]),
        Row("RSS idle, RS256 instance, after seeding (users, logins)", rss=idle["rs"]),
        Row("RSS idle, EdDSA instance, at start", rss=idle["ed_start"]),
        Row("RSS idle, EdDSA instance, after seeding", rss=idle["ed"]),
        Row("nginx GET /.well-known/jwks.json (2 workers)", r("nginx"), ratio=1.0,
            target="baseline"),
        at_least("GET /.well-known/jwks.json RS256", "jwks", r("nginx")["rps"], 0.8, "nginx"),
        at_least("GET /profile RS256 bearer", "profile", r("jwks")["rps"], 0.6, "own JWKS"),
        at_least("POST /oauth/token client_credentials RS256", "cc_rs", rs_lim, 0.8,
                 "RS256 crypto"),
        Row("POST /oauth/introspect (ratio: own JWKS)", r("introspect"),
            ratio=ratio(r("introspect")["rps"], r("jwks")["rps"]), target="report"),
        Row(f"refresh_token SQLite, {args.refresh_connections} clients (ratio: RS256 crypto)",
            r("refresh_sqlite"), ratio=ratio(r("refresh_sqlite")["rps"], rs_lim),
            target="0 non-2xx"),
        Row("GET /.well-known/jwks.json EdDSA", r("jwks_ed"),
            ratio=ratio(r("jwks_ed")["rps"], r("nginx")["rps"]), target="report (vs nginx)"),
        at_least("POST /oauth/token client_credentials EdDSA", "cc_ed", r("jwks_ed")["rps"],
                 0.5, "own JWKS"),
    ]
    if "refresh_pg" in res:
        rows.append(Row(f"refresh_token PostgreSQL, {args.refresh_connections} clients "
                        "(ratio: RS256 crypto)", r("refresh_pg"),
                        ratio=ratio(r("refresh_pg")["rps"], rs_lim), target="0 non-2xx"))
    else:
        rows.append(Row("refresh_token PostgreSQL", note="skipped (--no-postgres or no psql)"))
    probe, flood = r("probe"), r("probe_flood")
    p99, p50 = ratio(flood["p99_ms"], probe["p99_ms"]), ratio(flood["p50_ms"], probe["p50_ms"])
    rows += [
        Row(f"JWKS probe, {args.probe_connections} conns, idle", probe, target="baseline"),
        Row("JWKS probe during login flood: p99 / idle", flood, ratio=p99, target="<= 2",
            meets=p99 <= 2.0),
        Row("JWKS probe during login flood: p50 / idle", flood, ratio=p50,
            target="<= 1.5 (unchanged)", meets=p50 <= 1.5),
    ]
    first = r("flood1")["rss_mib"]
    for i in range(1, 6):
        f = r(f"flood{i}")
        growth = f["rss_mib"] - first
        rows.append(Row(f"POST /login flood {i}, {args.login_connections} conns "
                        "(ratio: RSS / after flood 1)", f, ratio=ratio(f["rss_mib"], first),
                        target="RSS <= flood 1 + 8 MiB" if i > 1 else "",
                        meets=growth <= 8.0 if i > 1 else None))
    # argon2id allocates 19 MiB per hash; given back, RSS after the floods
    # stays within two such blocks of the RSS before any login.
    last = r("flood5")["rss_mib"]
    rows.append(Row("RSS after flood 5 - RSS at start (MiB; ratio: / 19 MiB)",
                    rss=last - idle["rs_start"], ratio=(last - idle["rs_start"]) / 19.0,
                    target="<= 2 (38 MiB)", meets=last - idle["rs_start"] <= 38.0))
    if scale:
        rows += scale_rows(res, scale)
    return rows


def scale_rows(res: dict, scale: dict) -> list[Row]:
    rows = [Row(f"scale: seeding {scale['users']:,} users, {scale['clients']:,} clients, "
                f"{scale['refresh']:,} refresh tokens", note=f"{scale['seconds']:.1f} s"),
            Row("scale: RSS idle, empty store", rss=scale["rss_empty"]),
            Row("scale: RSS idle, seeded store", rss=scale["rss_seeded"],
                ratio=ratio(scale["rss_seeded"], scale["rss_empty"]), target="report")]
    for key, base, label in (("scale_login", "flood2", "POST /login"),
                             ("scale_refresh", "refresh_sqlite", "refresh_token SQLite"),
                             ("scale_cc", "cc_rs", "client_credentials RS256")):
        q = ratio(res[key]["rps"], res[base]["rps"])
        rows.append(Row(f"scale: {label} (ratio: empty store)", res[key], ratio=q,
                        target=">= 0.9 x empty", meets=q >= 0.9))
    return rows


COLUMNS = ("row", "req/s", "p50 ms", "p99 ms", "RSS MiB", "non-2xx", "errors", "ratio",
           "target", "pass")


def cells(row: Row) -> list[str]:
    def num(v: float | None, digits: int) -> str:
        return "" if v is None else ("n/a" if v != v else f"{v:,.{digits}f}")

    r = row.result
    rps = r["rps"] if r else row.rps
    rss = r["rss_mib"] if r and row.rss is None else row.rss
    verdict = {True: "pass", False: "FAIL", None: ""}[row.ok]
    counts = [str(r["non_2xx"]), str(r["errors"] + r["empty"])] if r else ["", ""]
    return [row.label, num(rps, 0), num(r["p50_ms"] if r else None, 2),
            num(r["p99_ms"] if r else None, 2), num(rss, 1), *counts,
            num(row.ratio, 2), row.target or row.note, verdict]


def text_table(rows: list[Row]) -> str:
    table = [list(COLUMNS)] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    out = []
    for n, line in enumerate(table):
        out.append("  ".join(c.ljust(w) if i in (0, 8) else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if n == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |",
           "|" + "|".join(["---"] + ["---:"] * 7 + ["---", "---"]) + "|"]
    for row in rows:
        line = cells(row)
        line[-1] = f"**{line[-1]}**" if line[-1] == "FAIL" else line[-1]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------
# The machine, the versions, docs/benchmarks.md


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": str(os.cpu_count()), "cpu": model, "kernel": os.uname().release}


def versions() -> dict[str, str]:
    commit = command_output(["git", "rev-parse", "--short=12", "HEAD"])
    # Changes to what goes into the binaries, not to docs or scripts.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            "src", "examples", "Cargo.toml", "Cargo.lock"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return {"keyturn": commit + (" (uncommitted changes)" if dirty else ""),
            "rustc": command_output(["rustc", "-V"]),
            "wrk": command_output(["wrk", "-v"]).split(" Copyright")[0],
            "nginx": command_output(["nginx", "-v"]).removeprefix("nginx version: "),
            "postgres": command_output(["psql", "-V"])}


def report(rows: list[Row], meta: dict) -> str:
    v, m = meta["versions"], meta["machine"]
    lines = [
        f"Run of {meta['date']}: `{meta['command']}`",
        "",
        f"- machine: {m['nproc']} cores ({m['cpu']}), Linux {m['kernel']}; load average "
        f"{meta['load_before']} before, {meta['load_after']} after (1, 5, 15 min)",
        f"- versions: keyturn {v['keyturn']}, {v['rustc']}, {v['wrk']}, {v['nginx']}, "
        f"{v['postgres']}",
        f"- wrk -t1, {meta['connections']} connections ({meta['refresh_connections']} for "
        f"refresh_token, {meta['login_connections']} for /login, {meta['probe_connections']} "
        f"for the probe), {meta['duration']:.0f} s per row, loopback {HOST}; keyturn, nginx "
        "and wrk share the cores",
        "",
        markdown_table(rows),
    ]
    if meta.get("plans"):
        lines += ["", "SQLite query plans (`EXPLAIN QUERY PLAN`) on the seeded store:", "",
                  "```text", meta["plans"].rstrip(), "```"]
    return "\n".join(lines)


def write_docs(text: str, path: str = DOCS) -> None:
    with open(path) as f:
        doc = f.read()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        before, rest = doc.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        doc = before + block + after
    else:
        doc = (doc.rstrip() + "\n\n## Latest `benches/load.py` run\n\n"
               "Written by `python3 benches/load.py`: everything between the markers\n"
               "is replaced on each run (`--no-write` leaves it alone).\n\n" + block + "\n")
    with open(path, "w") as f:
        f.write(doc)


# --------------------------------------------------------------------------
# --scale: a large SQLite store, seeded directly


def sqlite_path(kt: Keyturn) -> str:
    return kt.env["KEYTURN_DATABASE_URL"].removeprefix("sqlite://").split("?")[0]


def seed_scale(db: str, users: int, clients: int, refresh: int) -> None:
    """users, clients and refresh tokens (in families of 10) with real shapes;
    every user shares the hash of a real login-able user, every client the
    secret hash of the registered one."""
    now = int(time.time())
    con = sqlite3.connect(db)
    try:
        password_hash, = con.execute("SELECT password_hash FROM users WHERE username = ?",
                                     ("load0000",)).fetchone()
        secret_hash, = con.execute("SELECT secret_hash FROM clients WHERE client_id = ?",
                                   ("load-client",)).fetchone()
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO users (id, username, password_hash, roles, disabled, "
            "tokens_valid_after, created_at, updated_at) VALUES (?, ?, ?, ?, 0, 0, ?, ?)",
            ((f"scale-user-{i:07d}", f"scale{i:07d}", password_hash, '["user"]', now, now)
             for i in range(users)))
        con.executemany(
            "INSERT INTO clients (client_id, secret_hash, scopes, grant_types, audience, "
            "created_at) VALUES (?, ?, ?, ?, NULL, ?)",
            ((f"scale-client-{i:07d}", secret_hash, '["read"]',
              '["client_credentials","refresh_token"]', now) for i in range(clients)))
        per_family = 10
        families = refresh // per_family
        con.executemany(
            "INSERT INTO refresh_families (family_id, user_id, created_at, last_expires_at) "
            "VALUES (?, ?, ?, ?)",
            ((f"scale-family-{f:07d}", f"scale-user-{f % users:07d}", now - 3600,
              now + 14 * 86400) for f in range(families)))

        def tokens():
            for t in range(families * per_family):
                f = t // per_family
                last = t % per_family == per_family - 1
                digest = base64.urlsafe_b64encode(
                    t.to_bytes(8, "big") * 4).rstrip(b"=").decode()
                yield (digest, f"scale-family-{f:07d}", f"scale-user-{f % users:07d}",
                       "first-party", "", f"scale-jti-{t:08d}", now - 3600, now + 14 * 86400,
                       now + 900, None if last else now - 60)

        con.executemany(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, client_id, scope, "
            "access_jti, issued_at, expires_at, access_expires_at, used_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tokens())
        con.execute("UPDATE versions SET version = version + 1 WHERE name IN ('users', 'clients')")
        con.commit()
        con.execute("ANALYZE")
    finally:
        con.close()


SCALE_QUERIES = {
    "login: find_user": ("SELECT id, username, password_hash, roles, disabled, "
                         "tokens_valid_after, created_at, updated_at FROM users WHERE username = ?",
                         ("scale0000001",)),
    "login: throttle reservation": (
        "SELECT window_start, failures FROM login_throttle WHERE name_key = ?", ("x",)),
    "login: live families of the user": (
        "SELECT f.family_id FROM refresh_families f WHERE f.user_id = ? "
        "AND f.revoked_at IS NULL AND f.last_expires_at > ? AND f.created_at > ? "
        "AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.family_id "
        "AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > ?) "
        "AND f.family_id <> ? ORDER BY f.created_at DESC, f.family_id",
        ("scale-user-0000001", 0, 0, 0, "x")),
    "refresh: find_refresh_token": (
        "SELECT t.token_hash, t.family_id, t.user_id, t.client_id, t.scope, t.access_jti, "
        "t.issued_at, t.expires_at, t.access_expires_at, t.used_at, t.revoked_at, "
        "COALESCE(f.created_at, t.issued_at) AS family_started_at FROM refresh_tokens t "
        "LEFT JOIN refresh_families f ON f.family_id = t.family_id WHERE t.token_hash = ?",
        ("x",)),
    "refresh: lock_family": (
        "UPDATE refresh_families SET family_id = family_id WHERE family_id = ? "
        "RETURNING created_at, revoked_at", ("x",)),
    "refresh: spend": (
        "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND family_id = ? "
        "AND used_at IS NULL AND revoked_at IS NULL", (0, "x", "x")),
    "refresh: find user by id": (
        "SELECT id, username, password_hash, roles, disabled, tokens_valid_after, created_at, "
        "updated_at FROM users WHERE id = ?", ("x",)),
    "client_credentials: find_client": (
        "SELECT c.client_id, c.secret_hash, c.scopes, c.grant_types, c.audience, c.created_at, "
        "COALESCE(k.tokens_valid_after, 0) AS tokens_valid_after FROM clients c "
        "LEFT JOIN client_cutoffs k ON k.client_id = c.client_id WHERE c.client_id = ?",
        ("x",)),
}


def query_plans(db: str) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = []
    try:
        for name, (sql, params) in SCALE_QUERIES.items():
            out.append(f"{name}:")
            for row in con.execute("EXPLAIN QUERY PLAN " + sql, params):
                out.append(f"  {row[-1]}")
    finally:
        con.close()
    return "\n".join(out)


def scale_phase(procs: Processes, run: Runner, args, rs: Keyturn, seeds: dict) -> dict:
    """Seeds the RS256 store (server stopped), restarts it, re-runs rows."""
    print("scale: seeding the SQLite store ...", flush=True)
    restart_keyturn(procs, rs)   # idle RSS of a fresh process on the small store
    time.sleep(2)
    rss_empty = rs.rss()
    procs.stop(rs.proc)
    t0 = time.monotonic()
    seed_scale(sqlite_path(rs), args.scale_users, args.scale_clients, args.scale_refresh)
    seconds = time.monotonic() - t0
    restart_keyturn(procs, rs)
    time.sleep(2)
    rss_seeded = rs.rss()
    plans = query_plans(sqlite_path(rs))
    run_scale_steps(run, args, rs, seeds)
    return {"users": args.scale_users, "clients": args.scale_clients,
            "refresh": args.scale_refresh, "seconds": seconds, "rss_empty": rss_empty,
            "rss_seeded": rss_seeded, "plans": plans}


# --------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", help="a keyturn release binary: skips `cargo build --release`")
    ap.add_argument("--sign-rate", help="the sign_rate example binary: skips its build")
    ap.add_argument("--duration", type=float, default=8.0,
                    help="seconds per row (default: %(default)s)")
    ap.add_argument("--connections", type=int, default=32,
                    help="wrk connections per row (default: %(default)s)")
    ap.add_argument("--refresh-connections", type=int, default=64,
                    help="concurrent refresh_token clients (default: %(default)s)")
    ap.add_argument("--login-connections", type=int, default=16,
                    help="connections of the login floods (default: %(default)s)")
    ap.add_argument("--probe-connections", type=int, default=4,
                    help="connections of the light JWKS probe (default: %(default)s)")
    ap.add_argument("--clients", type=int, default=32,
                    help="OAuth clients the token rows take in turn (default: %(default)s)")
    ap.add_argument("--login-users", type=int, default=64,
                    help="users the login floods take in turn (default: %(default)s)")
    ap.add_argument("--sign-seconds", type=float, default=3.0,
                    help="seconds per algorithm of the crypto limit (default: %(default)s)")
    ap.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres",
                    help="PostgreSQL URL allowed to CREATE DATABASE (default: %(default)s)")
    ap.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL row")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--scale", action="store_true",
                    help="also seed a large SQLite store and re-run login/refresh/client rows")
    ap.add_argument("--scale-users", type=int, default=100_000)
    ap.add_argument("--scale-clients", type=int, default=100_000)
    ap.add_argument("--scale-refresh", type=int, default=1_000_000)
    return ap.parse_args()


def check_tools(args) -> None:
    missing = [t for t in ("wrk", "nginx") + (() if args.binary and args.sign_rate
                                              else ("cargo",)) if not shutil.which(t)]
    if missing:
        raise RuntimeError(f"not installed: {', '.join(missing)}")
    if not args.no_postgres and not shutil.which("psql"):
        print("psql not installed: skipping the PostgreSQL row", file=sys.stderr)
        args.no_postgres = True


def start_all(procs: Processes, args, binary: str, workdir: str, pg_db: str | None) -> tuple:
    rs = start_keyturn(procs, binary, "RS256", os.path.join(workdir, "rs"),
                       f"sqlite://{workdir}/rs/k.db", "RS256")
    ed = start_keyturn(procs, binary, "EdDSA", os.path.join(workdir, "ed"),
                       f"sqlite://{workdir}/ed/k.db", "EdDSA")
    pg = None
    if pg_db is not None:
        pg = start_keyturn(procs, binary, "PostgreSQL", os.path.join(workdir, "pg"), pg_db,
                           "RS256")
    for kt in filter(None, (rs, ed, pg)):
        seed_admin(kt)
    for kt in (rs, ed):
        seed_clients(kt, args.clients)
    print(f"  seeding {args.login_users} users ...", flush=True)
    seed_users(rs, args.login_users)
    return rs, ed, pg


def seed_all(args, rs: Keyturn, ed: Keyturn, pg: Keyturn | None) -> dict:
    seeds = {"user_token": rs.login(rs.users[0])["access_token"]}
    bearer = {"Authorization": f"Bearer {seeds['user_token']}"}
    wait_until(lambda: http("GET", rs.port, "/profile", headers=bearer)[0] == 200, 15,
               "user token accepted by /profile")
    active = expect("introspect", *http("POST", rs.port, "/oauth/introspect",
                                        f"token={seeds['user_token']}".encode(),
                                        {**FORM, **rs.basic()}))
    if not active.get("active"):
        raise RuntimeError(f"introspection of a fresh token: {active}")
    for kt, alg in ((rs, "RS256"), (ed, "EdDSA")):
        got = token_alg(client_token(kt))
        if got != alg:
            raise RuntimeError(f"{kt.name} instance signs {got}, not {alg}")
    n = 2 * args.refresh_connections
    print(f"  seeding {n} refresh tokens per store ...", flush=True)
    seeds["refresh_sqlite"] = seed_refresh_tokens(rs, n)
    if pg is not None:
        seeds["refresh_pg"] = seed_refresh_tokens(pg, n)
    return seeds


def without_machine_path(arg: str) -> str:
    """An argument as the docs may show it: a path inside the checkout
    becomes relative, one outside it (a binary in another target dir, a
    JSON file) its file name under a placeholder, so docs/benchmarks.md
    names no machine's paths."""
    if not os.path.isabs(arg):
        return arg
    if arg.startswith(os.getcwd() + os.sep):
        return os.path.relpath(arg)
    return "<path>/" + os.path.basename(arg)


def main() -> int:
    args = parse_args()

    def on_term(signum, frame):  # SIGTERM: same clean-up path as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C must interrupt even when started with SIGINT ignored (e.g. `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    procs = Processes()
    workdir = tempfile.mkdtemp(prefix="keyturn-load-")
    os.chmod(workdir, 0o711)  # traversable (for nginx workers), not listable
    pg_admin, pg_db = None, None
    command = shlex.join(["python3", "benches/load.py", *map(without_machine_path, sys.argv[1:])])
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command,
            "load_before": loadavg(), "machine": machine(), "duration": args.duration,
            "connections": args.connections, "refresh_connections": args.refresh_connections,
            "login_connections": args.login_connections,
            "probe_connections": args.probe_connections}
    try:
        check_tools(args)
        binary, sign_rate = build(args.binary, args.sign_rate)
        if not args.no_postgres:
            pg_admin, template = pg_admin_url(args.postgres)
            name = f"keyturn_load_{os.getpid()}_{int(time.time())}"
            psql(pg_admin, f"CREATE DATABASE {name}")
            pg_db = template.format(db=name)
        print(f"starting keyturn ({binary}) in {workdir} ...", flush=True)
        rs, ed, pg = start_all(procs, args, binary, workdir, pg_db)
        seeds = seed_all(args, rs, ed, pg)
        status, jwks = http("GET", rs.port, JWKS)
        expect("GET /.well-known/jwks.json", status, jwks)
        nginx_port = start_nginx(procs, workdir, jwks, 2)
        time.sleep(1)
        idle = {"rs": rs.rss(), "ed": ed.rss(), "rs_start": rs.rss_start,
                "ed_start": ed.rss_start}
        print(f"  crypto limit (sign_rate, {args.sign_seconds:.0f} s per algorithm) ...",
              flush=True)
        crypto = crypto_limit(sign_rate, args.sign_seconds)
        run = Runner(procs, workdir)
        run_steps(run, args, rs, ed, pg, nginx_port, seeds)
        scale = scale_phase(procs, run, args, rs, seeds) if args.scale else None
        for kt in filter(None, (rs, ed, pg)):
            if kt.proc.poll() is not None:
                raise RuntimeError(f"{kt.name} exited with {kt.proc.returncode}" + tail(kt.log))
        problems = server_problems([kt for kt in (rs, ed, pg) if kt])
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - report, then clean up
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if pg_admin and pg_db:
            try:
                psql(pg_admin, f"DROP DATABASE IF EXISTS {urllib.parse.urlsplit(pg_db).path[1:]}"
                     " WITH (FORCE)")
            except RuntimeError as err:
                print(f"warning: {err}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)

    meta.update(load_after=loadavg(), versions=versions(), plans=scale and scale["plans"])
    rows = build_rows(run.results, crypto, idle, args, scale)
    print()
    print(text_table(rows))
    if scale:
        print("\nSQLite query plans on the seeded store:\n" + scale["plans"])
    if problems:
        print("\nserver log lines at WARN or ERROR:\n" + problems)
    print(f"\nload average {meta['load_before']} before, {meta['load_after']} after")
    if not args.no_write:
        write_docs(report(rows, meta))
        print(f"wrote the table into {os.path.relpath(DOCS)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "crypto": crypto, "results": run.results}, f, indent=2)
    failed = [r.label for r in rows if r.ok is False]
    if failed:
        print(f"\n{len(failed)} row(s) failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def server_problems(instances: list[Keyturn], limit: int = 10) -> str:
    """WARN/ERROR lines of the servers' logs other than audit events (wrong
    passwords are not expected here either, so those are kept too)."""
    out = []
    pattern = re.compile(r"\b(WARN|ERROR)\b")
    for kt in instances:
        with open(kt.log, errors="replace") as f:
            lines = [line.rstrip() for line in f if pattern.search(line)]
        if lines:
            out.append(f"{kt.name}: {len(lines)} line(s); first {min(limit, len(lines))}:")
            out += ["  " + line[:300] for line in lines[:limit]]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
