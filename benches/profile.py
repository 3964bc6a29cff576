"""Where the time of one load.py row goes: perf, while wrk drives that row.

    python3 benches/profile.py ROW [--alg RS256|EdDSA] [--binary PATH] [--seconds 8]

ROW is one of: jwks, profile, client_credentials, introspect. It starts one
keyturn release instance on a temp SQLite store with the default settings
(as load.py does, with load.py's own functions), seeds what the row needs,
drives it with ``wrk -t1 -c32`` and records the keyturn process with
``perf record -g`` meanwhile. It prints

- the row's req/s under perf (perf costs a few per cent),
- the CPU the keyturn process used (user and system, in cores) and what is
  left idle on the machine, from /proc: a row that leaves cores idle waits
  on something (a commit, a lock), one that uses them all is CPU-bound;
- perf's top entries by self time, and grouped by what they belong to
  (crypto, kernel, SQLite, allocator, HTTP, JSON, tokio, ...).

Needs perf (Debian package linux-perf), wrk, and the release binary (built
with ``cargo build --release`` unless --binary is given). Loopback only.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (load.py beside this file)

ROWS = ("jwks", "profile", "client_credentials", "introspect")

# Where a symbol belongs, first match wins: (group, pattern of the symbol or DSO).
GROUPS = [
    ("crypto (aws-lc)", r"aws_lc|bn_|BN_|RSA_|rsa_|ed25519|edwards25519|x25519|sha256|sha512|SHA256|fiat_|ec_|"
                        r"bignum|aes_|gcm_|mont"),
    ("SQLite", r"sqlite3|libsqlite|sqlx_sqlite|sqlx_core::sqlite"),
    ("sqlx (other)", r"sqlx"),
    ("allocator", r"malloc|free|realloc|calloc|_int_|cfree|memalign|tcache"),
    ("memcpy/memset", r"memcpy|memmove|memset|memcmp|strlen"),
    ("JSON (serde)", r"serde_json|serde::"),
    ("base64", r"base64"),
    ("HTTP (hyper, poem)", r"hyper|poem|http::|httparse|h1::"),
    ("tracing", r"tracing"),
    ("tokio", r"tokio"),
    ("futex / threads", r"futex|pthread|__lll|syscall"),
    ("kernel", r"\[kernel|\[k\]|vmlinux"),
]


def cpu_ticks(pid: int) -> tuple[int, int]:
    """utime and stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def idle_ticks() -> tuple[int, int]:
    """idle and total jiffies of the machine."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values)


def group_of(symbol: str, dso: str) -> str:
    text = f"{dso} {symbol}"
    for name, pattern in GROUPS:
        if re.search(pattern, text):
            return name
    return "keyturn and other"


def perf_report(data: str, top: int) -> tuple[list[tuple[float, str, str]], Counter]:
    out = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "dso,symbol",
         "-g", "none", "--percent-limit", "0.05"],
        capture_output=True, text=True, check=True).stdout
    entries, groups = [], Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[([.k])\]\s+(.*)", line)
        if not m:
            continue
        pct, dso, kind, symbol = float(m[1]), m[2], m[3], m[4].strip()
        if kind == "k":
            dso = "[kernel]"
        entries.append((pct, dso, symbol))
        groups[group_of(symbol, dso)] += pct
    return entries[:top], groups


def threads_report(data: str) -> list[tuple[float, str]]:
    """Share of samples per thread name (tokio workers, SQLite's worker, ...)."""
    out = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "comm",
         "-g", "none", "--percent-limit", "0.5"],
        capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.+?)\s*$", line)
        if m:
            rows.append((float(m[1]), m[2]))
    return rows


def row_load(row: str, kt: load.Keyturn, conns: int, seconds: float) -> load.Load:
    if row == "jwks":
        return load.jwks_load(row, kt.port, conns, seconds)
    if row == "client_credentials":
        return load.cc_load(row, kt, conns, seconds)
    token = kt.login(kt.users[0])["access_token"]
    if row == "profile":
        return load.Load(row, kt.port, "/profile", conns, seconds,
                         headers={"Authorization": f"Bearer {token}"})
    return load.Load(row, kt.port, "/oauth/introspect", conns, seconds, "POST",
                     {**load.FORM, **kt.basic()}, body=f"token={token}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("row", choices=ROWS)
    p.add_argument("--alg", default="RS256", choices=("RS256", "EdDSA"))
    p.add_argument("--binary", help="a keyturn release binary: skips `cargo build --release`")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--frequency", type=int, default=999, help="perf samples/s")
    args = p.parse_args()
    for tool in ("perf", "wrk"):
        if not load.shutil.which(tool):
            sys.exit(f"{tool} is needed (apt-get install {'linux-perf' if tool == 'perf' else tool})")
    binary = args.binary
    if binary is None:
        load.cargo_build([])
        binary = os.path.join(load.target_dir(), "release", "keyturn")
    procs = load.Processes()
    workdir = tempfile.mkdtemp(prefix="keyturn-profile-")
    try:
        db = "sqlite://" + os.path.join(workdir, "keyturn.db")
        kt = load.start_keyturn(procs, os.path.abspath(binary), "profiled", workdir, db, args.alg)
        load.seed_admin(kt)
        load.seed_users(kt, 1)
        load.seed_clients(kt, args.clients)
        # Warm up (client cache, connections), as load.py's rows are warm.
        warm = row_load(args.row, kt, args.connections, 2)
        load.collect(load.start_wrk(procs, warm, workdir), "warm-up")

        data = os.path.join(workdir, "perf.data")
        user0, sys0 = cpu_ticks(kt.proc.pid)
        idle0, total0 = idle_ticks()
        wrk = load.start_wrk(procs, row_load(args.row, kt, args.connections, args.seconds),
                             workdir)
        perf = subprocess.Popen(["perf", "record", "-F", str(args.frequency), "-g", "-o", data,
                                 "-p", str(kt.proc.pid), "--", "sleep", str(args.seconds - 1)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        result = load.collect(wrk, args.row)
        perf.wait(timeout=60)
        user1, sys1 = cpu_ticks(kt.proc.pid)
        idle1, total1 = idle_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        cores = os.cpu_count() or 1
        wall = args.seconds
        print(f"\n{args.row} {args.alg}: {result['rps']:,.0f} req/s under perf, "
              f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
              f"non-2xx {result['non_2xx']}")
        print(f"keyturn CPU: user {(user1 - user0) / hz / wall:.2f} cores, "
              f"system {(sys1 - sys0) / hz / wall:.2f} cores; machine idle "
              f"{(idle1 - idle0) / max(total1 - total0, 1) * cores:.2f} of {cores} cores")
        entries, groups = perf_report(data, args.top)
        print("\nself time by group (% of keyturn's samples):")
        for name, pct in groups.most_common():
            print(f"  {pct:5.1f} %  {name}")
        print("\nsamples by thread:")
        for pct, thread in threads_report(data):
            print(f"  {pct:5.1f} %  {thread}")
        print(f"\ntop {args.top} symbols by self time:")
        for pct, dso, symbol in entries:
            print(f"  {pct:5.1f} %  {dso:<18.18} {symbol[:100]}")
        return 0
    finally:
        procs.stop_all()
        time.sleep(0.2)
        load.shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
