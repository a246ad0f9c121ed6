"""``python -m bench [NAME …]``: run bench/NAME_bench.py (or NAME.py) modules' ``main()``; no NAME runs every
``*_bench.py``. Extra arguments after ``--`` go to each benchmark."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path


def available() -> tuple[list[str], list[str]]:
    """(names a bare run executes: the *_bench.py modules; other modules run only when named)."""
    here = Path(__file__).parent
    default = sorted(p.stem.removesuffix("_bench") for p in here.glob("*_bench.py"))
    others = sorted(p.stem for p in here.glob("*.py") if not p.stem.endswith("_bench") and not p.stem.startswith("_"))
    return default, others


def main(argv: list[str]) -> int:
    names, _, rest = (
        (argv[: argv.index("--")], None, argv[argv.index("--") + 1 :]) if "--" in argv else (argv, None, [])
    )
    here = Path(__file__).parent
    default, others = available()
    if not names:
        names = default
    # Every name is checked before any benchmark runs (one takes minutes; a typo after it must not wait).
    mods = []
    for name in names:
        if name.startswith("-"):
            print(f"bench: {name!r} is an option: give it after --, e.g. python -m bench {names[0]} -- {name}")
            return 2
        mod = name if (here / f"{name}.py").exists() else f"{name}_bench"
        if not (here / f"{mod}.py").exists():
            print(f"bench: no benchmark {name!r} (have: {', '.join(default + others)})")
            return 2
        mods.append(mod)
    rc = 0
    for mod in mods:
        fn = importlib.import_module(f"bench.{mod}").main
        if inspect.signature(fn).parameters:
            rc |= int(fn(rest) or 0)
        else:  # a main() that reads sys.argv itself
            sys.argv = [str(here / f"{mod}.py"), *rest]
            rc |= int(fn() or 0)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
