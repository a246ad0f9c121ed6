"""Kernel headers that bcc compiles against: present, and for which kernel release.

bcc reads /lib/modules/$(uname -r)/build. When those headers belong to another kernel (Debian's 6.1 headers on
a 6.18 kernel, here), anything that reads kernel structs gets wrong offsets silently; vhtune's probes read only
tracepoint fields and BPF helpers, which are safe, so a mismatch is a warning, not a failure.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HeadersInfo:
    build_dir: Path
    present: bool
    release: str | None  # UTS_RELEASE the headers were generated for
    kernel: str  # running kernel release

    @property
    def matches(self) -> bool:
        return self.release is not None and _major_minor(self.release) == _major_minor(self.kernel)


def _major_minor(release: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else ()


def headers_info(kernel: str | None = None) -> HeadersInfo:
    kernel = kernel or os.uname().release
    build = Path("/lib/modules") / kernel / "build"
    uts = build / "include" / "generated" / "utsrelease.h"
    release = None
    if uts.exists():
        m = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts.read_text(errors="replace"))
        release = m.group(1) if m else None
    present = (build / "Makefile").exists() or uts.exists()
    return HeadersInfo(build_dir=build, present=present, release=release, kernel=kernel)
