#!/usr/bin/env python
# -*- test-case-name: tests.e2e.test_bare_relay -*-
"""
Summarise a py-spy ``--format raw`` profile (collapsed stacks) of the daemon,
as written by ``bench_core.py --profile PATH --profile-format raw``: for the
reactor thread and for the store's writer thread apart, the functions with
the largest self time and (relay's own) inclusive time, as shares of that thread's
samples (line numbers merged, so one function is one row).

    python benchmarks/profile_summary.py raw.txt --top 15
"""

import argparse
import collections
import re
import sys

_LINE = re.compile(r":\d+\)$")


def function(frame):
    """``name (file.py:123)`` -> ``name (file.py)``."""
    return _LINE.sub(")", frame)


def thread_of(frames):
    joined = ";".join(frames)
    if "ReactorBase.mainLoop" in joined:
        return "reactor"
    if "ThreadWorker" in joined or "threadpool" in joined:
        return "writer"
    return "other"


def summarise(lines):
    counts = collections.defaultdict(lambda: {"total": 0, "self": collections.Counter(),
                                              "incl": collections.Counter()})
    for line in lines:
        line = line.rstrip("\n")
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        frames = [function(f) for f in stack.split(";")]
        c = counts[thread_of(frames)]
        c["total"] += n
        c["self"][frames[-1]] += n
        for f in set(frames):
            c["incl"][f] += n
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    with open(args.raw) as f:
        counts = summarise(f)
    everything = sum(c["total"] for c in counts.values()) or 1
    for name in ("reactor", "writer", "other"):
        c = counts.get(name)
        if not c:
            continue
        sys.stdout.write("\n{} thread: {} samples ({:.0%} of all)\n".format(
            name, c["total"], c["total"] / everything))
        for kind in ("self", "incl"):
            sys.stdout.write("  by {} time:\n".format("self" if kind == "self" else "inclusive"))
            items = c[kind].most_common()
            if kind == "incl":
                # The framework's frames are in every stack: relay's own only.
                items = [(f, n) for f, n in items if "(relay/" in f]
            for f, n in items[:args.top]:
                sys.stdout.write("    {:6.1%}  {}\n".format(n / c["total"], f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
