#!/usr/bin/env python3
"""Fault runs against real ``keyturn serve`` processes on PostgreSQL.

Three scenarios, each on its own fresh database (created and dropped through
the admin URL) and temp directory, every process on 127.0.0.1:

  kill      three instances behind a round-robin balancer (retry on the next
            instance on connection refused/reset, never after an HTTP
            answer) under a mixed load (logins, refresh chains,
            client_credentials, admin user/client creation, forced
            rotations); one instance is killed with SIGKILL mid-load. Then
            every write answered 2xx is checked on the survivors.
  rotation  ``--rotations`` times (50): a rotation is killed with SIGKILL at
            a random point, by turns the CLI (``keys rotate --force``), a
            server answering ``POST /admin/keys/rotate?force=true`` and a
            server doing its scheduled start-up rotation (both restarted
            after). After each kill the keyset must hold exactly one
            current and one next key per algorithm, no key signed before it
            was published, and a cache-only RS256 verifier (keys from the
            JWKS fetched before the kill, never refetched) must accept every
            token the surviving and restarted servers sign.
  outage    one server whose database connection goes through this script's
            own TCP proxy; under load the proxy cuts every connection and
            refuses new ones for ``--outage`` seconds (30), so the machine's
            PostgreSQL is never stopped. /ready must say 503 within 2 s,
            JWKS and /profile stay 200, login/refresh/client_credentials
            answer 200 or 503 temporarily_unavailable with Retry-After
            within a bound, and everything works again once the proxy lets
            connections through, without a restart.

Prints one table: requests, retries, 5xx, lost writes, verifier failures,
max latency, and whether the scenario's checks held. Exit status 1 if any
did not. Standard library only (it speaks just enough of the PostgreSQL
protocol to create and drop the databases: trust, password, md5 and
SCRAM-SHA-256 authentication, no TLS).

    cargo build --release
    python3 benches/faults.py target/release/keyturn postgres://postgres@127.0.0.1:5432/test
    python3 benches/faults.py target/debug/keyturn postgres://... --rotations 10 --outage 8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

HOST = "127.0.0.1"
ISSUER = "http://keyturn.faults"
AUDIENCE = "keyturn"
PASSWORD = "correct horse battery staple"
BOUND = 10.0  # seconds: an answer slower than this counts as a hang


# --------------------------------------------------------------------------
# Just enough PostgreSQL protocol for CREATE/DROP DATABASE


class PgError(Exception):
    pass


def _pg_message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _pg_read(sock: socket.socket) -> tuple[bytes, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise PgError("PostgreSQL closed the connection")
            data += chunk
        return data

    kind = exactly(1)
    (length,) = struct.unpack("!I", exactly(4))
    return kind, exactly(length - 4)


def _pg_error(payload: bytes) -> str:
    fields = {f[:1]: f[1:].decode(errors="replace") for f in payload.split(b"\0") if f}
    return fields.get(b"M", "error")


def pg_execute(url: str, sql: str, timeout: float = 60) -> None:
    """Runs one statement on ``url`` (postgres://user[:pw]@host[:port]/db)."""
    u = urllib.parse.urlparse(url)
    user = urllib.parse.unquote(u.username or "postgres")
    password = urllib.parse.unquote(u.password or "")
    database = u.path.lstrip("/") or user
    with socket.create_connection((u.hostname or HOST, u.port or 5432), timeout=timeout) as sock:
        params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
        body = struct.pack("!I", 196608) + params
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        auth_message = salted = None
        while True:
            kind, payload = _pg_read(sock)
            if kind == b"E":
                raise PgError(_pg_error(payload))
            if kind == b"Z":
                break
            if kind != b"R":
                continue
            (code,) = struct.unpack("!I", payload[:4])
            if code == 3:  # cleartext
                sock.sendall(_pg_message(b"p", password.encode() + b"\0"))
            elif code == 5:  # md5
                inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
                sock.sendall(_pg_message(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:  # SASL: SCRAM-SHA-256
                first = ("n,," + first_bare).encode()
                sock.sendall(
                    _pg_message(
                        b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first
                    )
                )
            elif code == 11:
                server_first = payload[4:].decode()
                attrs = dict(a.split("=", 1) for a in server_first.split(","))
                salted = hashlib.pbkdf2_hmac(
                    "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
                )
                final_bare = f"c=biws,r={attrs['r']}"
                auth_message = f"{first_bare},{server_first},{final_bare}".encode()
                client_key = hmac.digest(salted, b"Client Key", "sha256")
                signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
                proof = bytes(a ^ b for a, b in zip(client_key, signature))
                final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
                sock.sendall(_pg_message(b"p", final))
            elif code in (0, 12):
                pass
            else:
                raise PgError(f"unsupported authentication method {code}")
        sock.sendall(_pg_message(b"Q", sql.encode() + b"\0"))
        error = None
        while True:
            kind, payload = _pg_read(sock)
            if kind == b"E":
                error = _pg_error(payload)
            if kind == b"Z":
                break
        sock.sendall(_pg_message(b"X", b""))
        if error:
            raise PgError(error)


def database_url(admin_url: str, name: str, port: int | None = None) -> str:
    u = urllib.parse.urlparse(admin_url)
    netloc = u.netloc
    if port is not None:
        netloc = netloc.rsplit("@", 1)
        host = f"{HOST}:{port}"
        netloc = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return urllib.parse.urlunparse(u._replace(netloc=netloc, path="/" + name))


# --------------------------------------------------------------------------
# keyturn processes


class Store:
    """A fresh database and temp dir for one scenario, dropped at the end."""

    def __init__(self, binary: str, admin_url: str, via_port: int | None = None):
        self.binary = binary
        self.admin_url = admin_url
        self.name = f"keyturn_faults_{uuid.uuid4().hex}"
        pg_execute(admin_url, f"CREATE DATABASE {self.name}")
        self.dir = tempfile.mkdtemp(prefix="keyturn-faults-")
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "KEYTURN_DATABASE_URL": database_url(admin_url, self.name, via_port),
            "KEYTURN_KEYS_DIR": os.path.join(self.dir, "keys"),
            "KEYTURN_ISSUER": ISSUER,
            "KEYTURN_BIND": f"{HOST}:0",
            "KEYTURN_REFRESH_SESSIONS_PER_USER": "1000",
        }
        self.servers: list[Server] = []
        self.logs = 0

    def cli(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            [self.binary, *args],
            cwd=self.dir,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"keyturn {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def provision(self, users: list[str]) -> dict[str, str]:
        """init, an admin `root`, `users`, a client `c-USER` each; secrets."""
        self.cli("init")
        self.cli("users", "add", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
        secrets = {}
        for user in users:
            self.cli("users", "add", user, "--password-stdin", stdin=PASSWORD + "\n")
            out = self.cli("clients", "add", f"c-{user}", "--scope", "read")
            secrets[user] = next(
                l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("client_secret:")
            )
        return secrets

    def serve(self) -> "Server":
        self.logs += 1
        server = Server(self, os.path.join(self.dir, f"serve{self.logs}.log"))
        self.servers.append(server)
        return server

    def keyset(self) -> list[dict]:
        return json.loads(self.cli("keys", "list", "-o", "json"))["keys"]

    def close(self) -> None:
        for server in self.servers:
            server.kill()
        try:
            pg_execute(self.admin_url, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        except PgError:  # before PostgreSQL 13: no FORCE (every server is stopped anyway)
            try:
                pg_execute(self.admin_url, f"DROP DATABASE IF EXISTS {self.name}")
            except (PgError, OSError) as err:
                print(f"note: could not drop {self.name}: {err}", file=sys.stderr)
        except OSError as err:
            print(f"note: could not drop {self.name}: {err}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    def __init__(self, store: Store, log: str):
        self.process = subprocess.Popen(
            [store.binary, "serve"],
            cwd=store.dir,
            env=store.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=open(log, "wb"),
            text=True,
        )
        self.base = None
        deadline = time.monotonic() + 60
        for line in self.process.stdout:
            if line.startswith("keyturn listening on "):
                self.base = line.split()[3]
            if line.startswith("Swagger UI:") or "Master key:" in line:
                break
            if time.monotonic() > deadline:
                break
        if self.base is None:
            self.kill()
            raise RuntimeError(f"keyturn serve did not start; see {log}")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def kill(self) -> None:
        """kill -9, reaped."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


# --------------------------------------------------------------------------
# HTTP


class NoAnswer(Exception):
    """No HTTP answer: refused, reset, closed before the whole answer."""


class Hung(Exception):
    pass


@dataclass
class Answer:
    status: int
    body: object
    headers: dict
    took: float
    retried: bool = False


class _Requests:
    """Every HTTP request this script sends."""

    def __init__(self):
        self.lock = threading.Lock()
        self.total = 0
        self.max_latency = 0.0

    def add(self) -> None:
        with self.lock:
            self.total += 1

    def took(self, seconds: float) -> None:
        with self.lock:
            self.max_latency = max(self.max_latency, seconds)


REQUESTS = _Requests()


def call(base: str, method: str, path: str, *, json_body=None, form=None, token=None,
         basic=None, timeout: float = BOUND) -> Answer:
    u = urllib.parse.urlparse(base)
    headers = {}
    data = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if basic:
        raw = f"{urllib.parse.quote(basic[0])}:{urllib.parse.quote(basic[1])}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    REQUESTS.add()
    started = time.monotonic()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        status, got = response.status, {k.lower(): v for k, v in response.getheaders()}
    except (TimeoutError, socket.timeout) as err:
        raise Hung(f"{method} {path} after {time.monotonic() - started:.1f}s") from err
    except (ConnectionError, http.client.HTTPException, OSError) as err:
        raise NoAnswer(str(err)) from err
    finally:
        REQUESTS.took(time.monotonic() - started)
        conn.close()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    return Answer(status, body, got, time.monotonic() - started)


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.server_errors = 0
        self.max_latency = 0.0
        self.problems: list[str] = []

    def saw(self, answer: Answer | None, took: float) -> None:
        with self.lock:
            self.requests += 1
            self.max_latency = max(self.max_latency, took)
            if answer is not None and answer.status >= 500:
                self.server_errors += 1

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


class Balancer:
    """Round robin; the next instance on a connection error only."""

    def __init__(self, bases: list[str], counts: Counts):
        self.bases = bases
        self.counts = counts
        self.turn = 0
        self.lock = threading.Lock()

    def send(self, method: str, path: str, **kw) -> Answer:
        with self.lock:
            first = self.turn
            self.turn += 1
        retried = False
        for attempt in range(2 * len(self.bases)):
            base = self.bases[(first + attempt) % len(self.bases)]
            started = time.monotonic()
            try:
                answer = call(base, method, path, **kw)
            except Hung as err:
                # A hang is a failure, then handled as a balancer would:
                # the request goes to the next instance.
                self.counts.problem(f"{base}: {err}")
                self.counts.saw(None, time.monotonic() - started)
                retried = True
                continue
            except NoAnswer:
                self.counts.saw(None, time.monotonic() - started)
                with self.counts.lock:
                    self.counts.retries += 1
                retried = True
                continue
            self.counts.saw(answer, answer.took)
            if answer.status >= 500:
                self.counts.problem(f"{answer.status} from {base}{path}: {answer.body}")
            answer.retried = retried
            return answer
        raise RuntimeError("no instance answered")


def guarded(counts: Counts, target, *args) -> threading.Thread:
    """A load thread whose crash is a counted problem, not a lost traceback."""

    def run() -> None:
        try:
            target(*args)
        except Exception as err:  # noqa: BLE001 - reported in the table
            counts.problem(f"{target.__name__} crashed: {err!r}")

    return threading.Thread(target=run)


@dataclass
class Result:
    name: str
    requests: int = 0
    retries: int = 0
    server_errors: int = 0
    lost_writes: int = 0
    verifier_failures: int | str = "-"
    max_latency: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.server_errors == 0 and self.lost_writes == 0 and (
            self.verifier_failures in ("-", 0)
        )


# --------------------------------------------------------------------------
# Scenario 1: kill -9 of one of three instances under a mixed load


def user_load(lb: Balancer, user: str, secret: str, deadline: float, out: dict) -> None:
    chains, lost_answers = [], 0
    while time.monotonic() < deadline:
        login = lb.send("POST", "/login", json_body={"username": user, "password": PASSWORD})
        if login.status != 200:
            lb.counts.problem(f"login {login.status}: {login.body}")
            continue
        chain = login.body["refresh_token"]
        for _ in range(3):
            answer = lb.send("POST", "/oauth/token",
                             form={"grant_type": "refresh_token", "refresh_token": chain})
            if answer.status == 200:
                chain = answer.body["refresh_token"]
            elif answer.status == 400 and answer.retried:
                # Rotated by the killed instance, answer lost: reuse detection
                # refuses the retry. The write was not lost; its answer was.
                lost_answers += 1
                chain = None
                break
            else:
                lb.counts.problem(f"refresh {answer.status}: {answer.body}")
                chain = None
                break
        if chain:
            chains.append(chain)
        grant = lb.send("POST", "/oauth/token", form={"grant_type": "client_credentials"},
                        basic=(f"c-{user}", secret))
        if grant.status != 200:
            lb.counts.problem(f"client_credentials {grant.status}: {grant.body}")
    out[user] = (chains, lost_answers)


def admin_load(lb: Balancer, token: str, deadline: float, out: dict) -> None:
    users, clients, rotations, lost_answers, n = [], [], [], 0, 0
    while time.monotonic() < deadline:
        n += 1
        name = f"made{n}"
        made = lb.send("POST", "/admin/users", token=token,
                       json_body={"username": name, "password": PASSWORD})
        if made.status == 201 or (made.status == 409 and made.retried):
            users.append(name)
            lost_answers += made.status == 409
        else:
            lb.counts.problem(f"create user {made.status}: {made.body}")
        made = lb.send("POST", "/admin/clients", token=token,
                       json_body={"client_id": f"mc{n}", "scopes": ["read"]})
        if made.status == 201:
            clients.append((f"mc{n}", made.body["client_secret"]))
        elif made.status == 409 and made.retried:
            lost_answers += 1
        else:
            lb.counts.problem(f"create client {made.status}: {made.body}")
        if n % 8 == 1:  # forced rotations, a few seconds apart
            rotated = lb.send("POST", "/admin/keys/rotate?force=true", token=token)
            if rotated.status == 200:
                rotations.append(next(k["kid"] for k in rotated.body["keys"] if k["state"] == "current"))
            else:
                lb.counts.problem(f"rotate {rotated.status}: {rotated.body}")
        time.sleep(0.15)
    out["admin"] = (users, clients, rotations, lost_answers)


def scenario_kill(binary: str, admin_url: str, seconds: float, workers: int) -> Result:
    result = Result("kill -9 1 of 3 instances")
    store = Store(binary, admin_url)
    try:
        users = [f"load{n}" for n in range(workers)]
        secrets = store.provision(users)
        servers = [store.serve() for _ in range(3)]
        counts = Counts()
        lb = Balancer([s.base for s in servers], counts)
        admin = lb.send("POST", "/login", json_body={"username": "root", "password": PASSWORD})
        token = admin.body["access_token"]
        deadline = time.monotonic() + seconds
        out: dict = {}
        threads = [guarded(counts, user_load, lb, u, secrets[u], deadline, out) for u in users]
        threads.append(guarded(counts, admin_load, lb, token, deadline, out))
        for t in threads:
            t.start()
        time.sleep(seconds / 3)
        servers[1].kill()
        killed_at = counts.requests
        for t in threads:
            t.join()
        during = counts.requests

        lost = []
        for u in users:
            out.setdefault(u, ([], 0))
        out.setdefault("admin", ([], [], [], 0))
        chains = [c for u in users for c in out[u][0]]
        lost_answers = sum(out[u][1] for u in users) + out["admin"][3]
        for chain in chains:
            answer = lb.send("POST", "/oauth/token",
                             form={"grant_type": "refresh_token", "refresh_token": chain})
            if answer.status != 200:
                lost.append(f"refresh chain ends in {answer.status}")
        made_users, made_clients, rotations, _ = out["admin"]
        listed = lb.send("GET", "/admin/users", token=token)
        names = {u["username"] for u in listed.body["users"]}
        lost += [f"user {u} missing" for u in made_users if u not in names]
        for cid, secret in made_clients:
            grant = lb.send("POST", "/oauth/token", form={"grant_type": "client_credentials"},
                            basic=(cid, secret))
            if grant.status != 200:
                lost.append(f"client {cid}: {grant.status}")
        keys = {k["kid"]: k["state"] for k in lb.send("GET", "/admin/keys", token=token).body["keys"]}
        lost += [f"rotation to {k} lost" for k in rotations if keys.get(k) not in ("current", "retired")]

        result.requests, result.retries = during, counts.retries
        result.server_errors, result.max_latency = counts.server_errors, counts.max_latency
        result.lost_writes = len(lost)
        result.problems = counts.problems + lost
        if counts.retries == 0:
            result.problems.append("the balancer never met the killed instance")
        result.notes.append(
            f"{killed_at} requests before the kill; checked after: {len(chains)} refresh chains, "
            f"{len(made_users)} users, {len(made_clients)} clients, {len(rotations)} rotations; "
            f"{lost_answers} answers lost with the instance (write committed, retry refused)"
        )
    finally:
        store.close()
    return result


# --------------------------------------------------------------------------
# Scenario 2: kill -9 in the middle of rotations; a cache-only verifier

SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CacheOnlyVerifier:
    """RS256 over the keys of one JWKS fetched earlier; never fetches again."""

    def __init__(self, jwks: dict):
        self.keys = {
            k["kid"]: (int.from_bytes(b64url(k["n"]), "big"), int.from_bytes(b64url(k["e"]), "big"))
            for k in jwks["keys"]
            if k.get("kty") == "RSA"
        }

    def verify(self, token: str) -> str | None:
        """None if valid, else why not."""
        head, claims, sig = token.split(".")
        header = json.loads(b64url(head))
        if header.get("alg") != "RS256":
            return f"alg {header.get('alg')} (this verifier does RS256 only)"
        key = self.keys.get(header.get("kid"))
        if key is None:
            return f"unknown kid {header.get('kid')}"
        n, e = key
        size = (n.bit_length() + 7) // 8
        digest = hashlib.sha256(f"{head}.{claims}".encode()).digest()
        t = SHA256_PREFIX + digest
        expected = b"\x00\x01" + b"\xff" * (size - len(t) - 3) + b"\x00" + t
        if pow(int.from_bytes(b64url(sig), "big"), e, n).to_bytes(size, "big") != expected:
            return "bad signature"
        body = json.loads(b64url(claims))
        if body.get("iss") != ISSUER or AUDIENCE not in (
            body["aud"] if isinstance(body.get("aud"), list) else [body.get("aud")]
        ):
            return "wrong iss/aud"
        if body.get("exp", 0) < time.time():
            return "expired"
        return None


def keyset_problems(keys: list[dict]) -> list[str]:
    problems = []
    if not any(k["state"] == "current" for k in keys):
        problems.append("no current key")
    for alg in {k["alg"] for k in keys if k["state"] == "current"}:
        current = sum(1 for k in keys if k["alg"] == alg and k["state"] == "current")
        nxt = sum(1 for k in keys if k["alg"] == alg and k["state"] == "next")
        if (current, nxt) != (1, 1):
            problems.append(f"{alg}: {current} current, {nxt} next")
    for k in keys:
        # RFC 3339 UTC with seconds: compares as text.
        if k.get("activated_at") and k["activated_at"] < k["published_at"]:
            problems.append(f"{k['kid']} signed before it was published")
    return problems


def login_token(base: str) -> str:
    answer = call(base, "POST", "/login", json_body={"username": "root", "password": PASSWORD})
    if answer.status != 200:
        raise RuntimeError(f"login at {base}: {answer.status} {answer.body}")
    return answer.body["access_token"]


def kid_of(token: str) -> str:
    return json.loads(b64url(token.split(".")[0]))["kid"]


# Who is rotating when the kill comes, by turns.
KINDS = ("cli", "admin", "scheduled")
FAST_PREPUBLISH = 2
FAST_SCHEDULE = {
    "KEYTURN_ROTATION_SCHEDULE": "* * * * * *",
    "KEYTURN_KEY_PREPUBLISH": f"{FAST_PREPUBLISH}s",
    "KEYTURN_JWKS_MAX_AGE": "1s",
}


def rfc3339(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def kill_after(argv: list[str], cwd: str, env: dict, delay: float) -> None:
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.kill()
    process.wait()


def synced_jwks(store: Store, survivor: Server, result: Result, when: str) -> dict:
    """The survivor's JWKS once it serves the stored keyset (it polls)."""
    stored = json.loads(store.cli("keys", "jwks"))
    deadline = time.monotonic() + BOUND
    while (served := call(survivor.base, "GET", "/.well-known/jwks.json").body) != stored:
        if time.monotonic() > deadline:
            result.problems.append(f"{when}: the survivor serves a stale JWKS")
            break
        time.sleep(0.1)
    return served


def scenario_rotation(binary: str, admin_url: str, rounds: int) -> Result:
    result = Result(f"kill -9 mid-rotation x{rounds}")
    store = Store(binary, admin_url)
    failures = tokens = inconsistent = 0
    committed = {kind: 0 for kind in KINDS}
    requests_before = REQUESTS.total
    REQUESTS.max_latency = 0.0
    try:
        store.provision([])
        survivor = store.serve()
        admin = login_token(survivor.base)
        # How long one rotation takes here (process start, RSA key
        # generation, the transaction): kills land anywhere in 0..1.5x the
        # longest of five (RSA key generation time varies a lot).
        took = []
        for _ in range(5):
            started = time.monotonic()
            store.cli("keys", "rotate", "--force")
            took.append(time.monotonic() - started)
        window = max(took) * 1.5
        # The verifier refuses what it must (so its zero failures mean
        # something): another token's signature, and a key it has not seen.
        checker = CacheOnlyVerifier(synced_jwks(store, survivor, result, "check"))
        one, other = login_token(survivor.base), login_token(survivor.base)
        forged = ".".join(one.split(".")[:2] + other.split(".")[2:])
        if checker.verify(one) is not None or checker.verify(forged) != "bad signature" \
                or CacheOnlyVerifier({"keys": []}).verify(one) is None:
            result.problems.append("the cache-only verifier does not tell good from bad tokens")
        for round_ in range(rounds):
            # The verifier follows the JWKS between rounds, as one does on
            # max-age; during a round it has only what it fetched before.
            verifier = CacheOnlyVerifier(synced_jwks(store, survivor, result, f"round {round_}"))
            before = store.keyset()
            current = [k["kid"] for k in before if k["state"] == "current"]
            nxt = [k["kid"] for k in before if k["state"] == "next"]
            delay = random.uniform(0, window)
            restarted = None
            kind = KINDS[round_ % 3]
            if kind == "cli":
                kill_after([binary, "keys", "rotate", "--force"], store.dir, store.env, delay)
            elif kind == "admin":
                victim = store.serve()
                threading.Thread(
                    target=lambda: _ignore(call, victim.base, "POST", "/admin/keys/rotate?force=true",
                                           token=admin),
                    daemon=True,
                ).start()
                time.sleep(delay)
                victim.kill()
                restarted = store.serve()
            else:
                # A server whose start-up rotation is due at once (`next`
                # published for FAST_PREPUBLISH), killed before that time
                # passes again: it cannot promote the key it generates
                # itself, which the verifier has not seen.
                published = next(k["published_at"] for k in before if k["state"] == "next")
                ready = rfc3339(published) + FAST_PREPUBLISH + 1
                while time.time() < ready:
                    time.sleep(0.1)
                delay = min(delay, FAST_PREPUBLISH - 0.2)
                kill_after([binary, "serve"], store.dir, {**store.env, **FAST_SCHEDULE}, delay)
                restarted = store.serve()
            after = store.keyset()
            problems = keyset_problems(after)
            now_current = [k["kid"] for k in after if k["state"] == "current"]
            if now_current == nxt:
                committed[kind] += 1
                key = next(k for k in after if k["kid"] == now_current[0])
                waited = rfc3339(key["activated_at"]) - rfc3339(key["published_at"])
                if kind == "scheduled" and waited < FAST_PREPUBLISH:
                    problems.append(f"scheduled rotation promoted a key published {waited} s before")
            elif now_current != current:
                problems.append(f"current {now_current}: neither {current} nor {nxt}")
            if problems:
                inconsistent += 1
                result.problems += [f"round {round_}: {p}" for p in problems]
            issued = []
            deadline = time.monotonic() + BOUND
            while True:
                token = login_token(survivor.base)
                issued.append(token)
                if kid_of(token) in now_current or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if kid_of(issued[-1]) not in now_current:
                result.problems.append(f"round {round_}: the survivor never signed with the new key")
            if restarted is not None:
                issued.append(login_token(restarted.base))
                restarted.kill()
            for token in issued:
                tokens += 1
                why = verifier.verify(token)
                if why:
                    failures += 1
                    result.problems.append(f"round {round_}: verifier: {why}")
        result.requests = REQUESTS.total - requests_before
        result.max_latency = REQUESTS.max_latency
        result.verifier_failures = failures
        result.notes.append(
            f"kills at 0..{window * 1000:.0f} ms into a rotation; committed of {rounds}: {committed}; "
            f"{inconsistent} inconsistent keysets; {tokens} tokens checked by a cache-only verifier"
        )
    finally:
        store.close()
    return result


def _ignore(fn, *args, **kw) -> None:
    try:
        fn(*args, **kw)
    except (NoAnswer, Hung):
        pass


# --------------------------------------------------------------------------
# Scenario 3: PostgreSQL unreachable under load, through our own proxy


class Proxy:
    """TCP proxy to PostgreSQL on its own asyncio loop. ``switch_off`` cuts
    every forwarded connection and refuses new ones (a stopped database);
    with ``stall`` it instead stops forwarding and leaves every connection
    open, new ones accepted and never answered (a network that drops
    packets silently)."""

    def __init__(self, target: tuple[str, int], stall: bool = False):
        self.target = target
        self.stall = stall
        self.up = True
        self.writers: set = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._client, HOST, 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _client(self, reader, writer) -> None:
        while not self.up and self.stall:
            await asyncio.sleep(0.05)
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self.writers.add(pair)

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    while not self.up and self.stall:
                        await asyncio.sleep(0.05)
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers.discard(pair)

    def switch_off(self) -> None:
        def cut():
            self.up = False
            if self.stall:
                return
            for a, b in list(self.writers):
                a.transport.abort()
                b.transport.abort()
        self.loop.call_soon_threadsafe(cut)

    def switch_on(self) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "up", True)


def scenario_outage(binary: str, admin_url: str, outage: float, workers: int,
                    stall: bool = False) -> Result:
    result = Result(f"PostgreSQL {'stalled' if stall else 'down'} {outage:.0f}s")
    u = urllib.parse.urlparse(admin_url)
    proxy = Proxy((u.hostname or HOST, u.port or 5432), stall)
    store = Store(binary, admin_url, via_port=proxy.port)
    counts = Counts()
    stop = threading.Event()
    recovered = threading.Event()
    ok_after: dict[str, int] = {}
    cut_at: list[float] = []  # when the proxy cut the database off
    stats = {"unavailable": 0, "lost_answers": 0, "lost_writes": 0, "max_store": 0.0,
             "max_memory": 0.0}
    try:
        users = [f"load{n}" for n in range(workers)]
        secrets = store.provision(users + ["reader"])
        server = store.serve()
        reader_token = login_token_as(server.base, "reader")

        def store_call(what: str, tolerated: tuple = (), **kw) -> Answer | None:
            started = time.monotonic()
            try:
                answer = call(server.base, "POST", **kw)
            except (NoAnswer, Hung) as err:
                counts.saw(None, time.monotonic() - started)
                counts.problem(f"{what}: {err}")
                return None
            counts.saw(answer, answer.took)
            with counts.lock:
                stats["max_store"] = max(stats["max_store"], answer.took)
            if answer.status == 200:
                if recovered.is_set():
                    with counts.lock:
                        ok_after[what] = ok_after.get(what, 0) + 1
            elif (answer.status == 503 and "retry-after" in answer.headers
                  and isinstance(answer.body, dict)
                  and answer.body.get("error") == "temporarily_unavailable"
                  and not recovered.is_set()):
                with counts.lock:
                    stats["unavailable"] += 1
            elif answer.status not in tolerated:
                after = " after recovery" if recovered.is_set() else ""
                counts.problem(f"{what}{after}: {answer.status} {answer.body}")
            return answer

        def worker(user: str) -> None:
            # since: when the request that first got 503 for this token was
            # sent; its rotation may have committed with the answer lost.
            chain, since, n = None, None, 0
            while not stop.is_set():
                n += 1
                if n % 4 == 0 and since is None:
                    chain = None
                if chain is None:
                    login = store_call("login", path="/login",
                                       json_body={"username": user, "password": PASSWORD})
                    if login is None or login.status != 200:
                        time.sleep(0.2)
                        continue
                    chain = login.body["refresh_token"]
                sent = time.monotonic()
                answer = store_call("refresh", (400,) if since else (), path="/oauth/token",
                                    form={"grant_type": "refresh_token", "refresh_token": chain})
                unavailable = False
                if answer is not None and answer.status == 200:
                    chain, since = answer.body["refresh_token"], None
                elif answer is not None and answer.status == 503:
                    since = since or sent
                    unavailable = True
                elif answer is not None and answer.status == 400 and since:
                    # Only a request sent before the cut can have committed.
                    if cut_at and since < cut_at[0] + 0.05:
                        with counts.lock:
                            stats["lost_answers"] += 1
                    else:
                        with counts.lock:
                            stats["lost_writes"] += 1
                        counts.problem("refresh refused after a 503 to a request sent during "
                                       "the outage: a lost write")
                    chain, since = None, None
                else:
                    chain = None
                grant = store_call("client_credentials", path="/oauth/token",
                                   form={"grant_type": "client_credentials"},
                                   basic=(f"c-{user}", secrets[user]))
                if unavailable or (grant is not None and grant.status == 503):
                    time.sleep(0.2)

        def memory_reader() -> None:
            while not stop.is_set():
                for path, token in (("/.well-known/jwks.json", None), ("/profile", reader_token)):
                    started = time.monotonic()
                    try:
                        answer = call(server.base, "GET", path, token=token)
                    except (NoAnswer, Hung) as err:
                        counts.saw(None, time.monotonic() - started)
                        counts.problem(f"{path}: {err}")
                        continue
                    counts.saw(answer, answer.took)
                    with counts.lock:
                        stats["max_memory"] = max(stats["max_memory"], answer.took)
                    if answer.status != 200:
                        counts.problem(f"{path}: {answer.status}")
                time.sleep(0.05)

        def ready_becomes(status: int, within: float) -> float | None:
            since = time.monotonic()
            while time.monotonic() - since < within:
                try:
                    if call(server.base, "GET", "/ready", timeout=within).status == status:
                        return time.monotonic() - since
                except (NoAnswer, Hung):
                    pass
                time.sleep(0.1)
            return None

        threads = [guarded(counts, worker, u) for u in users]
        threads.append(guarded(counts, memory_reader))
        for t in threads:
            t.start()
        time.sleep(2)
        proxy.switch_off()
        cut = time.monotonic()
        cut_at.append(cut)
        ready_503 = ready_becomes(503, 2.0)
        if ready_503 is None:
            result.problems.append("/ready did not answer 503 within 2 s")
        time.sleep(max(0.0, outage - (time.monotonic() - cut)))
        unavailable = stats["unavailable"]
        proxy.switch_on()
        ready_200 = ready_becomes(200, BOUND)
        if ready_200 is None:
            result.problems.append(f"/ready not 200 within {BOUND:.0f} s of the store's return")
        time.sleep(0.5)  # requests already in flight may still meet the outage
        recovered.set()
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join()
        for what in ("login", "refresh", "client_credentials"):
            if not ok_after.get(what):
                result.problems.append(f"no {what} answered 200 after recovery")
        if unavailable == 0:
            result.problems.append("the load never met the outage")
        if stats["max_store"] >= BOUND / 2:
            result.problems.append(f"a store-bound answer took {stats['max_store']:.1f} s")
        # 503 temporarily_unavailable is the expected answer: not in the 5xx column.
        result.requests = counts.requests
        result.server_errors = counts.server_errors - stats["unavailable"]
        result.max_latency = counts.max_latency
        result.lost_writes = stats["lost_writes"]
        result.problems += counts.problems
        fmt = lambda t: "never" if t is None else f"{t * 1000:.0f} ms"
        result.notes.append(
            f"{unavailable} answered 503 temporarily_unavailable + Retry-After (not counted as 5xx); "
            f"/ready 503 {fmt(ready_503)} after the cut, 200 {fmt(ready_200)} after the return; "
            f"max latency {stats['max_store'] * 1000:.0f} ms store-bound, "
            f"{stats['max_memory'] * 1000:.0f} ms JWKS+/profile; "
            f"{stats['lost_answers']} refresh answers lost with the connection; "
            f"200s after recovery: {ok_after}"
        )
    finally:
        stop.set()
        store.close()
    return result


def login_token_as(base: str, user: str) -> str:
    answer = call(base, "POST", "/login", json_body={"username": user, "password": PASSWORD})
    if answer.status != 200:
        raise RuntimeError(f"login of {user}: {answer.status} {answer.body}")
    return answer.body["access_token"]


# --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", help="path of a release or debug keyturn binary")
    parser.add_argument("admin_url", help="PostgreSQL URL allowed to CREATE/DROP DATABASE")
    parser.add_argument("--rotations", type=int, default=50, help="rotation kills (50)")
    parser.add_argument("--outage", type=float, default=30, help="seconds PostgreSQL is cut off (30)")
    parser.add_argument("--load-seconds", type=float, default=15, help="kill scenario load (15)")
    parser.add_argument("--workers", type=int, default=6, help="load threads per scenario (6)")
    parser.add_argument("--only", choices=["kill", "rotation", "outage"], action="append")
    parser.add_argument("--stall", action="store_true",
                        help="outage: stall the connections (silent packet loss) instead of cutting them")
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        parser.error(f"{args.binary} is not an executable keyturn binary")
    try:
        pg_execute(args.admin_url, "SELECT 1")
    except (PgError, OSError) as err:
        print(f"error: PostgreSQL at {args.admin_url}: {err}", file=sys.stderr)
        return 1
    chosen = args.only or ["kill", "rotation", "outage"]
    results = []
    for name in chosen:
        print(f"running {name}...", file=sys.stderr, flush=True)
        if name == "kill":
            results.append(scenario_kill(binary, args.admin_url, args.load_seconds, args.workers))
        elif name == "rotation":
            results.append(scenario_rotation(binary, args.admin_url, args.rotations))
        else:
            results.append(
                scenario_outage(binary, args.admin_url, args.outage, args.workers, args.stall)
            )

    header = ("scenario", "requests", "retries", "5xx", "lost writes", "verifier failures",
              "max latency", "checks")
    rows = [
        (r.name, str(r.requests), str(r.retries), str(r.server_errors), str(r.lost_writes),
         str(r.verifier_failures), f"{r.max_latency * 1000:.0f} ms", "ok" if r.ok else "FAILED")
        for r in results
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print()
    for r in results:
        for note in r.notes:
            print(f"{r.name}: {note}")
        for problem in r.problems[:20]:
            print(f"{r.name}: PROBLEM {problem}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
