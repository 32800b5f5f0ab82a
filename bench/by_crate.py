#!/usr/bin/env python3
"""Where a callgrind profile's instructions go, by crate.

    bench/by_crate.py target/callgrind.out REQUESTS

Each function's own instructions (self cost) count for the crate the function belongs to. Code
that the compiler inlined from std/core/alloc counts for the function it was inlined into, so
`berth_edge` includes the std helpers berth's phases call inline. C functions are named by what
they are (mimalloc, libc mem*). Prints the share of the total and instructions per request.
"""
import collections
import re
import subprocess
import sys

STD_PATH = re.compile(r"\b(core|alloc|std)(::[A-Za-z_][A-Za-z0-9_]*)*::")
ROW = re.compile(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S.*)")


def crate_of(entry: str) -> str:
    """`file:function [object]` to the crate the function belongs to."""
    function = entry.split(":", 1)[1] if ":" in entry else entry
    function = re.sub(r"\s*\[[^\]]*\]$", "", function)
    if re.search(r"mem(cpy|move|set)", function):
        return "libc mem*"
    if re.match(r"_?mi_", function):
        return "mimalloc"
    paths = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)::", STD_PATH.sub("", function))
    if paths:
        return paths[0]
    if "libc" in entry or entry.startswith("./"):
        return "libc (other)"
    return "std (other)"


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    profile, requests = sys.argv[1], int(sys.argv[2])
    listing = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", profile],
        capture_output=True, text=True, check=True,
    ).stdout
    total = None
    by_crate = collections.Counter()
    for line in listing.splitlines():
        row = ROW.match(line)
        if not row:
            continue
        cost, entry = int(row.group(1).replace(",", "")), row.group(2)
        if "PROGRAM TOTALS" in entry:
            total = cost
            continue
        # The runtime's outermost frames (main, block_on) are listed with their callees'
        # cost; counting them would count everything twice.
        if total is not None and cost > total // 2:
            continue
        by_crate[crate_of(entry)] += cost
    if not total:
        sys.exit(f"{profile}: no PROGRAM TOTALS line")
    for crate, cost in by_crate.most_common(12):
        print(f"{100 * cost / total:6.2f}%  {cost / requests:7.0f}/request  {crate}")


if __name__ == "__main__":
    main()
