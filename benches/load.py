#!/usr/bin/env python3
"""Load test for the keyturn release binary, over loopback only.

Starts ``target/release/keyturn serve`` on 127.0.0.1 (random free port, temp
dir for the SQLite store and the keys), creates a user with the CLI, then
measures, each scenario for ``--duration`` seconds:

  baseline  GET the same JWKS bytes from a static server (nginx if installed,
            else Python's ThreadingHTTPServer, labelled as such)
  (a)       GET /.well-known/jwks.json
  (b)       GET /profile with a bearer token
  (c)       POST /login (argon2id-bound)
  (d)       (a) while (c) floods the server, at the same connection counts
  (e)       a light JWKS probe (few connections) idle and during the flood
  (f)       the same probe against the static server, idle and while keyturn
            is flooded with logins (a control for CPU contention)

and prints a table with ratios against the baseline measured in the same run
(JWKS req/s / static req/s; JWKS p99 during the login flood / JWKS p99 idle).

The load generator is ``wrk`` when installed (``--client wrk``), otherwise a
keep-alive asyncio HTTP/1.1 client in a subprocess (``--client python``);
Python tops out far below wrk, so its absolute numbers mostly measure the
client, but both sides of each ratio use the same client.

Standard library only. Every server is stopped on exit, error or Ctrl-C.

    cargo build --release
    python3 benches/load.py [--binary target/release/keyturn] [--duration 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

HOST = "127.0.0.1"  # never anything else
USERNAME = "bench"
PASSWORD = "correct horse battery staple"
MARKER = "LOADJSON "


# --------------------------------------------------------------------------
# Helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(method: str, port: int, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 10.0):
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


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


class Processes:
    """Every child we start, stopped in reverse order on exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        # Own session: Ctrl-C reaches us only, and we stop the children.
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop on SIGTERM; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()
        self.procs.clear()


# --------------------------------------------------------------------------
# Load generators. Both print one line: MARKER + JSON with requests,
# duration_s, rps, p50_ms, p99_ms, max_ms, errors (socket), non_2xx.


@dataclass
class Scenario:
    name: str
    port: int
    path: str
    connections: int
    duration: float
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


WRK_LUA = """
wrk.method = [==[{method}]==]
{headers}
{body}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,"max_us":%.1f,' ..
    '"errors":%d,"non_2xx":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def wrk_command(s: Scenario, workdir: str, threads: int) -> list[str]:
    headers = "\n".join(f'wrk.headers[ [==[{k}]==] ] = [==[{v}]==]' for k, v in s.headers.items())
    body = f"wrk.body = [==[{s.body}]==]" if s.body else ""
    script = os.path.join(workdir, f"{s.name}.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA.format(method=s.method, headers=headers, body=body, marker=MARKER))
    return ["wrk", f"-t{min(threads, s.connections)}", f"-c{s.connections}",
            f"-d{s.duration:.0f}s", "--timeout", "10s", "-s", script,
            f"http://{HOST}:{s.port}{s.path}"]


async def py_client(spec: dict) -> dict:
    """Keep-alive HTTP/1.1 closed-loop client: `connections` coroutines, each
    sending its next request as soon as the previous response is read."""
    port, path, method = spec["port"], spec["path"], spec["method"]
    body = spec["body"].encode()
    head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    head += [f"{k}: {v}" for k, v in spec["headers"].items()]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    latencies: list[float] = []
    counts = {"errors": 0, "non_2xx": 0}
    start = time.perf_counter()
    deadline = start + spec["duration"]

    async def worker() -> None:
        reader = writer = None
        while time.perf_counter() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                t0 = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                length, close = 0, False
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value.strip())
                    elif name == "connection" and value.strip().lower() == "close":
                        close = True
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if not status_line.split(b" ", 2)[1].startswith(b"2"):
                    counts["non_2xx"] += 1
                if close:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
                counts["errors"] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(spec["connections"])))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e6

    return {"requests": len(latencies), "duration_us": elapsed * 1e6, "p50_us": pct(50),
            "p99_us": pct(99), "max_us": latencies[-1] * 1e6 if latencies else float("nan"),
            **counts}


def start_load(procs: Processes, s: Scenario, client: str, workdir: str,
               threads: int) -> subprocess.Popen:
    if client == "wrk":
        argv = wrk_command(s, workdir, threads)
    else:
        spec = {"port": s.port, "path": s.path, "method": s.method, "headers": s.headers,
                "body": s.body, "connections": s.connections, "duration": s.duration}
        argv = [sys.executable, os.path.abspath(__file__), "--_client", json.dumps(spec)]
    return procs.start(f"load:{s.name}", argv, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen, name: str) -> dict:
    out, err = proc.communicate(timeout=120)
    for line in out.splitlines():
        if line.startswith(MARKER):
            r = json.loads(line[len(MARKER):])
            secs = r["duration_us"] / 1e6
            return {"requests": r["requests"], "rps": r["requests"] / secs if secs else 0.0,
                    "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3,
                    "max_ms": r["max_us"] / 1e3, "errors": r["errors"], "non_2xx": r["non_2xx"]}
    raise RuntimeError(f"load generator for {name} printed no result:\n{out}\n{err}")


def run(procs: Processes, client: str, workdir: str, threads: int,
        *scenarios: Scenario) -> list[dict]:
    """Runs the scenarios at the same time; returns their results in order."""
    started = [start_load(procs, s, client, workdir, threads) for s in scenarios]
    return [collect(p, s.name) for p, s in zip(started, scenarios)]


# --------------------------------------------------------------------------
# Servers


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


def start_static(procs: Processes, workdir: str, jwks: bytes, use_nginx: bool,
                 workers: int) -> tuple[str, int]:
    # A directory of its own, readable by nginx workers (which drop to
    # nobody when started as root); keyturn's directory stays private.
    sdir = tempfile.mkdtemp(prefix="static-", dir=workdir)
    os.chmod(sdir, 0o755)
    path = os.path.join(sdir, "jwks.json")
    with open(path, "wb") as f:
        f.write(jwks)
    os.chmod(path, 0o644)
    port = free_port()
    log = os.path.join(sdir, "server.log")
    nginx = shutil.which("nginx") if use_nginx else None
    if nginx:
        conf = os.path.join(sdir, "nginx.conf")
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(workers=workers, dir=sdir, host=HOST, port=port, user=user))
        argv = [nginx, "-p", sdir, "-e", os.path.join(sdir, "error.log"), "-c", conf]
        label = f"nginx (static file, {workers} workers)"
    else:
        argv = [sys.executable, os.path.abspath(__file__), "--_static", str(port), path]
        why = "nginx not installed" if use_nginx else "--no-nginx"
        label = f"Python ThreadingHTTPServer (static bytes; {why})"
    with open(log, "wb") as out:
        proc = procs.start("static", argv, stdout=out, stderr=subprocess.STDOUT)
    wait_until(lambda: http("GET", port, "/.well-known/jwks.json")[1] == jwks, 15,
               label, proc, log)
    return label, port


def static_server(port: int, path: str) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    with open(path, "rb") as f:
        body = f.read()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=300")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((HOST, port), Handler).serve_forever()


def start_keyturn(procs: Processes, binary: str, workdir: str) -> tuple[int, dict[str, str]]:
    port = free_port()
    env = dict(os.environ)
    env.update({
        "KEYTURN_DATABASE_URL": f"sqlite://{workdir}/k.db",
        "KEYTURN_KEYS_DIR": f"{workdir}/keys",
        "KEYTURN_BIND": f"{HOST}:{port}",
        "KEYTURN_ISSUER": f"http://{HOST}:{port}",
        "RUST_LOG": env.get("RUST_LOG", "warn"),
    })
    log = os.path.join(workdir, "keyturn.log")
    with open(log, "wb") as out:
        proc = procs.start("keyturn", [binary, "serve"], env=env, stdout=out,
                           stderr=subprocess.STDOUT)
    wait_until(lambda: http("GET", port, "/ready")[0] == 200, 90, "keyturn /ready", proc, log)
    add = subprocess.run([binary, "users", "add", USERNAME, "--role", "admin",
                          "--password-stdin"], env=env, input=PASSWORD + "\n", text=True,
                         capture_output=True, timeout=60)
    if add.returncode != 0:
        raise RuntimeError(f"keyturn users add failed:\n{add.stdout}{add.stderr}")
    return port, env


# --------------------------------------------------------------------------
# Main


def fmt(v: float, digits: int = 2) -> str:
    return "n/a" if v != v else f"{v:,.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/keyturn",
                    help="the keyturn release binary (default: %(default)s)")
    ap.add_argument("--duration", type=float, default=6.0,
                    help="seconds per scenario (default: %(default)s)")
    ap.add_argument("--connections", type=int, default=32,
                    help="connections for JWKS/profile/baseline (default: %(default)s)")
    ap.add_argument("--login-connections", type=int, default=16,
                    help="connections for the login flood (default: %(default)s)")
    ap.add_argument("--probe-connections", type=int, default=4,
                    help="connections for the light JWKS latency probe (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default: %(default)s)")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                    help="load generator (default: wrk if installed)")
    ap.add_argument("--no-nginx", action="store_true",
                    help="use the Python static server as the baseline even if nginx exists")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--_client", help=argparse.SUPPRESS)
    ap.add_argument("--_static", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._client:
        result = asyncio.run(py_client(json.loads(args._client)))
        print(MARKER + json.dumps(result), flush=True)
        return 0
    if args._static:
        static_server(int(args._static[0]), args._static[1])
        return 0

    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        print(f"{args.binary} not found. Build it first:\n\n    cargo build --release\n\n"
              "or pass --binary PATH.", file=sys.stderr)
        return 2
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if client == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed; use --client python", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1

    def on_term(signum, frame):  # SIGTERM: same clean-up path as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C must interrupt even when started with SIGINT ignored (e.g. `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    procs = Processes()
    workdir = tempfile.mkdtemp(prefix="keyturn-load-")
    os.chmod(workdir, 0o711)  # traversable (for nginx workers), not listable
    d, c, lc, pc = args.duration, args.connections, args.login_connections, args.probe_connections
    try:
        print(f"starting keyturn ({binary}) in {workdir} ...", flush=True)
        port, _env = start_keyturn(procs, binary, workdir)
        status, jwks = http("GET", port, "/.well-known/jwks.json")
        if status != 200:
            raise RuntimeError(f"GET /.well-known/jwks.json: {status} {jwks[:200]!r}")
        login_body = json.dumps({"username": USERNAME, "password": PASSWORD})
        status, raw = http("POST", port, "/login", login_body.encode(),
                           {"Content-Type": "application/json"}, timeout=30)
        if status != 200:
            raise RuntimeError(f"login failed: {status} {raw[:200]!r}")
        token = json.loads(raw)["access_token"]
        # A user created by the CLI reaches the server's in-memory user view
        # by polling (about a second); until then its tokens are refused.
        issued = time.monotonic()
        while True:
            status, raw = http("GET", port, "/profile", headers={"Authorization": f"Bearer {token}"})
            if status == 200 or time.monotonic() - issued > 10:
                break
            time.sleep(0.05)
        if status != 200:
            raise RuntimeError(f"GET /profile: {status} {raw[:200]!r}")
        if time.monotonic() - issued > 0.05:
            print(f"note: the fresh token was refused by /profile for "
                  f"{time.monotonic() - issued:.2f} s after login (user view not yet reloaded)",
                  flush=True)
        baseline_label, static_port = start_static(procs, workdir, jwks, not args.no_nginx, cores)
        print(f"keyturn on {HOST}:{port}; baseline {baseline_label} on {HOST}:{static_port}; "
              f"client {client}; JWKS {len(jwks)} bytes; {cores} cores", flush=True)

        jwks_path = "/.well-known/jwks.json"
        bearer = {"Authorization": f"Bearer {token}"}
        login = dict(method="POST", body=login_body, headers={"Content-Type": "application/json"})

        def step(label: str, *scenarios: Scenario) -> list[dict]:
            print(f"  {label} ({d:.0f} s) ...", flush=True)
            return run(procs, client, workdir, args.threads, *scenarios)

        # Warm-up (connection setup, allocator, page cache), not reported.
        step("warm-up", Scenario("warm", port, jwks_path, c, 2))
        res: dict[str, dict] = {}
        res["static"], = step("baseline: static JWKS", Scenario("static", static_port, jwks_path, c, d))
        res["jwks"], = step("(a) keyturn JWKS", Scenario("jwks", port, jwks_path, c, d))
        res["profile"], = step("(b) keyturn /profile",
                               Scenario("profile", port, "/profile", c, d, headers=bearer))
        res["login"], = step("(c) keyturn /login", Scenario("login", port, "/login", lc, d, **login))
        res["jwks_flood"], res["login_flood"] = step(
            "(d) JWKS during login flood",
            Scenario("jwks_flood", port, jwks_path, c, d),
            Scenario("login_flood", port, "/login", lc, d, **login))
        res["probe"], = step("(e) JWKS probe, idle", Scenario("probe", port, jwks_path, pc, d))
        res["probe_flood"], res["login_flood2"] = step(
            "(e) JWKS probe during login flood",
            Scenario("probe_flood", port, jwks_path, pc, d),
            Scenario("login_flood2", port, "/login", lc, d, **login))
        # Control: the same probe against the static server, idle and while
        # keyturn is flooded with logins. It shares the CPU but not keyturn's
        # reactor, so it shows how much of (e) is plain CPU contention.
        res["sprobe"], = step("(f) static probe, idle",
                              Scenario("sprobe", static_port, jwks_path, pc, d))
        res["sprobe_flood"], res["login_flood3"] = step(
            "(f) static probe during keyturn login flood",
            Scenario("sprobe_flood", static_port, jwks_path, pc, d),
            Scenario("login_flood3", port, "/login", lc, d, **login))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - report, then clean up
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        ("static", "baseline: static JWKS (%s)" % ("nginx" if baseline_label.startswith("nginx")
                                                    else "Python"), c),
        ("jwks", "(a) keyturn GET /.well-known/jwks.json", c),
        ("profile", "(b) keyturn GET /profile (bearer)", c),
        ("login", "(c) keyturn POST /login (argon2id)", lc),
        ("jwks_flood", "(d) keyturn JWKS during login flood", c),
        ("login_flood", "    the login flood during (d)", lc),
        ("probe", "(e) keyturn JWKS probe, idle", pc),
        ("probe_flood", "(e) keyturn JWKS probe during login flood", pc),
        ("login_flood2", "    the login flood during (e)", lc),
        ("sprobe", "(f) static JWKS probe, idle", pc),
        ("sprobe_flood", "(f) static probe during keyturn login flood", pc),
        ("login_flood3", "    the login flood during (f)", lc),
    ]
    print()
    print(f"client: {client}; baseline: {baseline_label}; {d:.0f} s per scenario; "
          f"loopback {HOST}; {cores} cores shared by server, baseline and client")
    header = f"{'scenario':44} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>7} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for key, label, conns in rows:
        r = res[key]
        print(f"{label:44} {conns:>5} {fmt(r['rps'], 0):>10} {fmt(r['p50_ms']):>8} "
              f"{fmt(r['p99_ms']):>8} {r['non_2xx']:>7} {r['errors']:>6}")

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    ratios = [
        ("keyturn JWKS req/s / static baseline req/s",
         ratio(res["jwks"]["rps"], res["static"]["rps"])),
        ("keyturn /profile req/s / static baseline req/s",
         ratio(res["profile"]["rps"], res["static"]["rps"])),
        ("JWKS p99 during login flood / JWKS p99 idle (%d conns)" % c,
         ratio(res["jwks_flood"]["p99_ms"], res["jwks"]["p99_ms"])),
        ("JWKS req/s during login flood / JWKS req/s idle (%d conns)" % c,
         ratio(res["jwks_flood"]["rps"], res["jwks"]["rps"])),
        ("JWKS probe p99 during login flood / idle (%d conns)" % pc,
         ratio(res["probe_flood"]["p99_ms"], res["probe"]["p99_ms"])),
        ("  control: static probe p99 during the flood / idle",
         ratio(res["sprobe_flood"]["p99_ms"], res["sprobe"]["p99_ms"])),
        ("  keyturn probe p99 / static probe p99, both during the flood",
         ratio(res["probe_flood"]["p99_ms"], res["sprobe_flood"]["p99_ms"])),
        ("login req/s during flood (d) / login req/s alone (c)",
         ratio(res["login_flood"]["rps"], res["login"]["rps"])),
    ]
    print()
    for label, value in ratios:
        print(f"{label:60} {fmt(value, 3):>8}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"client": client, "baseline": baseline_label, "duration_s": d,
                       "cores": cores, "jwks_bytes": len(jwks), "results": res,
                       "ratios": dict(ratios)}, f, indent=2)
    bad = [k for k, r in res.items() if r["errors"] or (r["non_2xx"] and not k.startswith("login"))]
    if bad:
        print(f"\nwarning: socket errors or non-2xx responses in: {', '.join(bad)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
