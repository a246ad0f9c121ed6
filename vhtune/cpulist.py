"""The kernel's CPU-list format (Cpus_allowed_list, node*/cpulist, taskset -c): "0-2,5" ↔ [0, 1, 2, 5]."""

from __future__ import annotations

from collections.abc import Iterable


def parse_cpulist(text: str) -> list[int]:
    """'0-2,5' → [0, 1, 2, 5] (sorted, unique). Raises ValueError on anything else; callers say what to do."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if a < 0 or a > b:
            raise ValueError(f"bad CPU range {part!r}")
        cpus.update(range(a, b + 1))
    return sorted(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """[0, 1, 2, 5] → '0-2,5'; empty → ''."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(set(cpus)):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)
