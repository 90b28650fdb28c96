#!/usr/bin/env python3
"""Run the OCI runtime-tools conformance suite against a runtime; compare with runc.

The suite (opencontainers/runtime-tools, commit 408c51e) is a set of TAP
programs, ``validation/*/*.t``. Each one writes a bundle (a config.json plus a
busybox rootfs) and drives ``$RUNTIME create/start/state/kill/delete`` on it;
inside the container, ``runtimetest`` checks that the kernel state matches the
spec (mounts, namespaces, cgroups, capabilities...) and prints ``ok``/``not ok``
lines. Usage (from ``scripts/oci_conformance.sh``, which builds the suite)::

    conformance.py --suite DIR --runtime PATH --out DIR [--baseline F] [--tests F]
                   [--allow F] [--jobs-file F] [test.t ...]

It writes ``OUT/summary.txt`` (one line per test file, the same columns as
``runc-baseline.txt``), ``OUT/tap/<file>.tap`` (the raw TAP of each file) and
``OUT/passed.txt`` (every passing test as ``file.t: description #n``, where
``#n`` numbers repeated descriptions). With ``--tests`` (a ``passed.txt``
of runc, e.g. ``bench/oci/runc-passed.txt``) it lists the tests runc passes
that this runtime does not, minus the patterns in ``--allow`` (fnmatch, one a
line, ``#`` comments), and exits 1 if any is left. With only ``--baseline``
(the per-file summary) a file with fewer passes than runc's counts as a
regression of the difference.

Standard library only; Python 3.9.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import os
import re
import subprocess
import sys
import time

OK = re.compile(r"^(not )?ok (\d+)(?: - )?(.*?)(\s*#\s*(skip|todo)\b.*)?$", re.I)


def parse_tap(text: str) -> list[tuple[str, str]]:
    """(result, description) for each test line; result is ok, fail or skip."""
    out = []
    for line in text.splitlines():
        m = OK.match(line)
        if not m:
            continue
        if m.group(5) and m.group(5).lower() == "skip":
            res = "skip"
        else:
            res = "fail" if m.group(1) else "ok"
        out.append((res, m.group(3).strip()))
    return out


def keys(name: str, results: list[tuple[str, str]], want: str = "ok") -> list[str]:
    """Stable names for the tests of one file: repeated descriptions get #2, #3..."""
    seen: dict[str, int] = {}
    out = []
    for res, desc in results:
        seen[desc] = seen.get(desc, 0) + 1
        if res == want:
            out.append(f"{name}: {desc} #{seen[desc]}")
    return out


def run_one(path: str, env: dict, timeout: float) -> tuple[str, object, float]:
    t0 = time.monotonic()
    try:
        p = subprocess.run(
            [path], capture_output=True, text=True, timeout=timeout, env=env, cwd=os.path.dirname(path) + "/../.."
        )
        out, rc = p.stdout, p.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc = "timeout"
    return out, rc, time.monotonic() - t0


def read_baseline(path: str) -> dict[str, int]:
    """file -> number passed, from a summary in runc-baseline.txt's format."""
    counts = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^(\S+\.t)\s+ok=(\d+)", line)
            if m:
                counts[m.group(1)] = int(m.group(2))
    return counts


def read_lines(path: str | None) -> list[str]:
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [ln.rstrip("\n") for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", required=True, help="the built runtime-tools directory")
    ap.add_argument("--runtime", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--baseline", help="runc's per-file summary")
    ap.add_argument("--tests", help="runc's passed.txt (per-test baseline)")
    ap.add_argument("--allow", help="allow-list of known gaps (fnmatch patterns)")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("files", nargs="*", help="validation/x/y.t (default: all)")
    a = ap.parse_args(argv)

    suite = os.path.abspath(a.suite)
    files = a.files or sorted(glob.glob(os.path.join(suite, "validation/*/*.t")))
    files = [f if os.path.isabs(f) else os.path.join(suite, f) for f in files]
    os.makedirs(os.path.join(a.out, "tap"), exist_ok=True)
    env = dict(os.environ, RUNTIME=a.runtime)
    rows, passed, total = [], [], [0, 0, 0]
    t_all = time.monotonic()
    for path in files:
        name = os.path.basename(path)
        out, rc, secs = run_one(path, env, a.timeout)
        with open(os.path.join(a.out, "tap", name + ".tap"), "w") as f:
            f.write(out)
        res = parse_tap(out)
        n_ok = sum(r == "ok" for r, _ in res)
        n_fail = sum(r == "fail" for r, _ in res)
        n_skip = sum(r == "skip" for r, _ in res)
        plan = re.search(r"^1\.\.(\d+)", out, re.M)
        first = next((d for r, d in res if r == "fail"), "")[:90]
        total[0] += n_ok
        total[1] += n_fail
        total[2] += n_skip
        passed += keys(name, res)
        planned = plan.group(1) if plan else "-"
        row = f"{name:<42} ok={n_ok:<4d} fail={n_fail:<3d} skip={n_skip:<3d} plan={planned:<4} rc={rc!s:<7}"
        row += f" {secs:5.1f}s {first}"
        rows.append(row)
        print(row, flush=True)
    wall = time.monotonic() - t_all
    tot = f"TOTAL: {total[0]} passed, {total[1]} failed, {total[2]} skipped ({len(rows)} test files)"
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write("\n".join(rows + [tot]) + "\n")
    with open(os.path.join(a.out, "passed.txt"), "w") as f:
        f.write("".join(k + "\n" for k in passed))
    print(tot)
    print(f"wall time: {wall:.0f} s; runtime: {a.runtime}")

    allow = read_lines(a.allow)
    missing: list[str] = []
    if a.tests and os.path.exists(a.tests):
        mine = set(passed)
        missing = [k for k in read_lines(a.tests) if k not in mine]
        names = {os.path.basename(p) for p in files}
        missing = [k for k in missing if k.split(":", 1)[0] in names]
    elif a.baseline:
        base = read_baseline(a.baseline)
        mine_counts = {r.split()[0]: int(re.search(r"ok=(\d+)", r).group(1)) for r in rows}
        missing = [
            f"{n}: {base[n] - c} fewer passes than runc ({c} < {base[n]})"
            for n, c in mine_counts.items()
            if n in base and c < base[n]
        ]
    gaps = [k for k in missing if not any(fnmatch.fnmatchcase(k, p) for p in allow)]
    allowed = len(missing) - len(gaps)
    if a.tests or a.baseline:
        print(f"compared with runc: {len(missing)} runc-passing tests not passed, {allowed} on the allow-list")
        for k in gaps:
            print(f"REGRESSION: {k}")
        with open(os.path.join(a.out, "regressions.txt"), "w") as f:
            f.write("".join(k + "\n" for k in gaps))
    return 1 if gaps else 0


if __name__ == "__main__":
    sys.exit(main())
