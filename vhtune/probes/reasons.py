"""Names of skb drop reasons as the running kernel numbers them.

The enum changes between kernels (this host: headers 6.1, kernel 6.18), so the numbers are read from the
kfree_skb format file's ``__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)``, never from headers.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

FORMAT = Path("/sys/kernel/tracing/events/skb/kfree_skb/format")
_PAIR = re.compile(r'\{\s*(\d+)\s*,\s*"([A-Z0-9_]+)"\s*\}')


def parse(text: str) -> dict[int, str]:
    return {int(num): name for num, name in _PAIR.findall(text)}


@functools.cache
def drop_reasons(path: Path = FORMAT) -> dict[int, str]:
    try:
        return parse(path.read_text())
    except OSError:
        return {}


def reason_name(code: int) -> str:
    return drop_reasons().get(code, f"REASON_{code}")
