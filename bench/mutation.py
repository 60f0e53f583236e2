"""Mutation testing of filters/ and proxy/routes.py against the fast tests (tests/unit/).

A slow check (~6 min on two cores), run by hand, never in CI:

    python bench/mutation.py                 # run every mutant, then print the kill rate per module
    python bench/mutation.py "filters.auth*"  # only the mutants whose name matches
    python bench/mutation.py --report        # print the table of the last run without running
    python bench/mutation.py --fresh         # forget every cached result first (after changing tests)

The mutmut configuration is ``[mutmut]`` in setup.cfg; mutmut works in ``mutants/`` at the
repository root (ignored by git). Mutants listed in bench/mutation-equivalent.md (names in
backticks) change nothing a user or operator can observe; the table also gives the rate without
them, and names any listed one that no longer survives (the list is out of date).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = Path(__file__).resolve().parent / "mutation-equivalent.md"


def module_of(name: str) -> str:
    """``filters.auth.x__key_from__mutmut_3`` → ``filters.auth``."""
    module = name.split(".x", 1)[0] if ".x" in name else name.rsplit(".", 1)[0]
    return module + ".__init__" if module in ("filters", "proxy") else module


def results() -> dict[str, str]:
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            found[name] = status.strip()
    return found


def equivalent_names() -> set[str]:
    if not EQUIVALENT.exists():
        return set()
    return set(re.findall(r"`((?:filters|proxy)\.[\w.ǁ]+__mutmut_\d+)`", EQUIVALENT.read_text()))


def report(found: dict[str, str]) -> int:
    equivalent = equivalent_names()
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, status in found.items():
        row = rows[module_of(name)]
        row["total"] += 1
        row[status] += 1
        if status == "survived" and name in equivalent:
            row["equivalent"] += 1
    print(f"{'module':<28}{'total':>7}{'killed':>8}{'survived':>10}{'no tests':>10}{'equiv':>7}"
          f"{'kill %':>8}{'excl. equiv %':>15}")
    total: dict[str, int] = defaultdict(int)
    for module in sorted(rows) + ["all"]:
        row = total if module == "all" else rows[module]
        if module != "all":
            for k, v in row.items():
                total[k] += v
        killed = row["killed"] + row["timeout"]
        scored = row["total"] - row["equivalent"]
        print(f"{module:<28}{row['total']:>7}{killed:>8}{row['survived']:>10}{row['no tests']:>10}"
              f"{row['equivalent']:>7}{100 * killed / max(row['total'], 1):>7.1f}%"
              f"{100 * killed / max(scored, 1):>14.1f}%")
    stale = sorted(n for n in equivalent if found.get(n) not in (None, "survived"))
    if stale:
        print("\nlisted as equivalent but not surviving (update bench/mutation-equivalent.md):")
        for n in stale:
            print(f"  {n}: {found[n]}")
    other = sorted(n for n, s in found.items() if s not in ("killed", "survived", "timeout", "no tests"))
    if other:
        print("\nneither killed nor survived (not checked; re-run):", ", ".join(other[:20]))
    unexplained = sorted(n for n, s in found.items() if s == "survived" and n not in equivalent)
    if unexplained:
        print(f"\n{len(unexplained)} surviving mutants not listed as equivalent (mutmut show NAME):")
        for n in unexplained:
            print(f"  {n}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutant name globs, e.g. 'filters.auth*' (default: all)")
    parser.add_argument("--report", action="store_true", help="only print the table of the last run")
    parser.add_argument("--fresh", action="store_true",
                        help="delete mutants/ first: mutmut keeps a mutant's result while its function is "
                             "unchanged, even when the tests changed")
    args = parser.parse_args()
    if args.fresh and not args.report:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    if not args.report:
        # mutmut's progress line is long and repeated; its result is read back from mutants/.
        run = subprocess.run(["mutmut", "run", *args.names], cwd=ROOT, stdout=subprocess.DEVNULL)
        if run.returncode:
            print(f"mutmut run exited {run.returncode}", file=sys.stderr)
            return run.returncode
    return report(results())


if __name__ == "__main__":
    sys.exit(main())
