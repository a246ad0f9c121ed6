"""A deterministic ``newc`` cpio writer (the initramfs format the kernel unpacks), gzip'd.

newc (magic "070701"): per entry a 110-byte ASCII header of 13 eight-digit hex fields (ino, mode, uid, gid,
nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize incl. NUL, check=0), the name and
its NUL padded to a multiple of 4, then the data padded to a multiple of 4; the archive ends with an entry
named "TRAILER!!!". Owner root, mtime 0: same inputs, same bytes.
"""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _entry(out: gzip.GzipFile, ino: int, name: str, mode: int, data: bytes, nlink: int = 1) -> None:
    nb = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(nb), 0)
    hdr = b"070701" + b"".join(f"{f:08X}".encode() for f in fields)
    out.write(hdr + nb + _pad(len(hdr) + len(nb)))
    out.write(data + _pad(len(data)))


def write_newc(tree: Path, dest: Path) -> None:
    """Archive everything under ``tree`` (dirs, regular files, symlinks) into gzip'd newc at ``dest``."""
    paths = sorted(p for p in tree.rglob("*"))
    tmp = dest.with_suffix(dest.suffix + ".part")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        ino = 1
        for p in paths:
            rel = p.relative_to(tree).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                _entry(gz, ino, rel, stat.S_IFLNK | 0o777, os.readlink(p).encode())
            elif stat.S_ISDIR(st.st_mode):
                _entry(gz, ino, rel, stat.S_IFDIR | (st.st_mode & 0o7777), b"", nlink=2)
            elif stat.S_ISREG(st.st_mode):
                _entry(gz, ino, rel, stat.S_IFREG | (st.st_mode & 0o7777), p.read_bytes())
            else:
                continue
            ino += 1
        _entry(gz, 0, "TRAILER!!!", 0, b"")
    os.replace(tmp, dest)
