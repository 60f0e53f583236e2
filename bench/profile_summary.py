"""Summarise a py-spy ``--format raw`` (collapsed stacks) profile: top functions by self time
(the sampled leaf) and by inclusive time (anywhere on the stack).

    python bench/profile_summary.py profile.collapsed.txt [--top 25]
"""
from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.", "<frozen "):
        i = path.find(marker)
        if i >= 0:
            rest = path[i + len(marker):]
            return rest.split("/", 1)[1] if marker == "lib/python3." and "/" in rest else rest
    return path


def _norm(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{m.group('name')} ({_short(m.group('path'))})"


def parse(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = [_norm(f) for f in stack.split(";") if f]
        # py-spy puts "process ..." / "thread ..." pseudo-frames first; keep only code frames.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        stacks.append((frames, n))
    return stacks


def summarize_collapsed(text: str, top: int = 20) -> str:
    stacks = parse(text)
    total = sum(n for _, n in stacks)
    if not total:
        return "no samples"
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    files: Counter[str] = Counter()
    for frames, n in stacks:
        if not frames:
            continue
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        leaf_file = frames[-1].rsplit("(", 1)[-1].rstrip(")").split(":")[0]
        files[leaf_file] += n
    out = [f"{total} samples (busy threads only)", "", "self time (leaf frame):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_c.most_common(top)]
    out += ["", "inclusive time (anywhere on the stack):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top + 10)]
    out += ["", "self time by file:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in files.most_common(top)]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    with open(a.path) as fh:
        print(summarize_collapsed(fh.read(), a.top))


if __name__ == "__main__":
    main()
