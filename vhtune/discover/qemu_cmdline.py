"""What a QEMU command line says about a VM: name, uuid, memory, accelerator, netdevs and their chardevs.

Two option syntaxes occur: QEMU's classic ``key=value,key2=value2`` (a doubled comma is a literal comma; a
leading bare word is the implied key, e.g. ``tap`` in ``-netdev tap,id=t0``) and the JSON objects libvirt
generates for ``-netdev`` / ``-object`` / ``-device`` (``-netdev {"type":"vhost-user","chardev":...}``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from vhtune.discover.model import NetdevInfo
from vhtune.discover.procfs import parse_cpulist

_TRUE = {"on", "yes", "true", "y", "1"}
_FALSE = {"off", "no", "false", "n", "0"}
# Boolean chardev/netdev keys that QEMU also accepts bare ("server") or negated ("nowait").
_BOOL_KEYS = {
    "server",
    "wait",
    "vhost",
    "vhostforce",
    "debug-threads",
    "share",
    "reconnect-ms",
    "telnet",
    "abstract",
    "tight",
}
_QEMU_BINARY = re.compile(r"^(qemu-system-[\w-]+|qemu-kvm|kvm|qemu-[\w-]*kvm)$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtTpPeE]?)[bB]?\s*$")
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def is_qemu_argv0(argv0: str) -> bool:
    return bool(_QEMU_BINARY.match(os.path.basename(argv0)))


def split_opts(text: str, implied: str | None = None) -> dict[str, Any]:
    """Parse ``a=1,b=2`` (``,,`` is a literal comma). A bare leading word becomes ``implied`` (when
    given); other bare words are booleans: ``server`` → on, ``nowait`` → wait=off."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if i + 1 < len(text) and text[i + 1] == ",":
                cur.append(",")
                i += 2
                continue
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    out: dict[str, Any] = {}
    for n, part in enumerate(parts):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
        elif n == 0 and implied is not None:
            out[implied] = key
        elif key.startswith("no") and key[2:] in _BOOL_KEYS:
            out[key[2:]] = "off"
        else:
            out[key] = "on"
    return out


def parse_option(text: str, implied: str | None = None) -> dict[str, Any]:
    """One option argument in either syntax (JSON object or key=value)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            return {}
        return obj if isinstance(obj, dict) else {}
    return split_opts(text, implied)


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def size_bytes(value: Any, default_shift: int = 0) -> int | None:
    """QEMU sizes: ``4G``, ``4194304k``, ``128M``; a bare number is in units of ``1 << default_shift``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value << default_shift
    m = _SIZE.match(str(value))
    if not m:
        return None
    suffix = m.group(2).lower()
    shift = _SHIFT[suffix] if suffix else default_shift
    return int(float(m.group(1)) * (1 << shift))


def _int(value: Any) -> int | None:
    """A non-negative integer option value (``4``, ``"4"``); None for anything else (a command line that QEMU
    itself would refuse still belongs to a live process while it exits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    text = str(value).strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _fd_list(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    out: list[int] = []
    for part in str(value).split(":"):
        if (fd := _int(part)) is not None:
            out.append(fd)
    return tuple(out)


@dataclass
class QemuConfig:
    name: str | None = None
    uuid: str | None = None
    memory_mib: int | None = None
    accel: str | None = None
    debug_threads: bool = False
    netdevs: list[NetdevInfo] = field(default_factory=list)
    chardevs: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory_backends: list[dict[str, Any]] = field(default_factory=list)
    policy_nodes: list[int] = field(default_factory=list)  # host-nodes= of memory backends


# Options whose argument we read; every other option is skipped with its argument when it has one.
_WITH_ARG = {
    "name",
    "uuid",
    "m",
    "accel",
    "machine",
    "M",
    "netdev",
    "nic",
    "net",
    "chardev",
    "object",
}


def _netdev(opts: dict[str, Any], fallback_id: str) -> NetdevInfo:
    kind = str(opts.get("type", "?"))
    nd = NetdevInfo(id=str(opts.get("id", fallback_id)), kind=kind)
    if kind == "tap":
        nd.ifname = opts.get("ifname")
        nd.fds = _fd_list(opts.get("fds")) or _fd_list(opts.get("fd"))
        nd.vhostfds = _fd_list(opts.get("vhostfds")) or _fd_list(opts.get("vhostfd"))
        nd.vhost = as_bool(opts.get("vhost", False)) or as_bool(opts.get("vhostforce", False))
        nd.vhost = nd.vhost or bool(nd.vhostfds)
        if (queues := _int(opts.get("queues"))) is not None:
            nd.queues = queues
        elif nd.fds:
            nd.queues = len(nd.fds)
    elif kind == "vhost-user":
        nd.chardev = opts.get("chardev")
        if (queues := _int(opts.get("queues"))) is not None:
            nd.queues = queues
    return nd


# sun_path is 108 bytes; its first byte is the NUL that marks an abstract name.
_SUN_PATH_ABSTRACT_MAX = 107


def _chardev_path(ch: dict[str, Any]) -> str | None:
    """A socket chardev's path as /proc/net/unix prints its bound name: an abstract one (``abstract=on``, QEMU
    >= 5.1) with a leading '@' and, with ``tight=off``, the NULs padding sun_path to its full size as '@'s."""
    path = ch.get("path")
    if path is None or not as_bool(ch.get("abstract", False)):
        return path
    pad = "" if as_bool(ch.get("tight", True)) else "@" * max(0, _SUN_PATH_ABSTRACT_MAX - len(path.encode()))
    return f"@{path}{pad}"


def parse_qemu_cmdline(argv: list[str]) -> QemuConfig:
    cfg = QemuConfig()
    opts_by: dict[str, list[str]] = {}
    flags: set[str] = set()
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            opt = arg.lstrip("-")
            if opt in _WITH_ARG and i + 1 < len(argv):
                opts_by.setdefault(opt, []).append(argv[i + 1])
                i += 2
                continue
            flags.add(opt)
        i += 1

    for text in opts_by.get("name", []):
        o = split_opts(text, implied="guest")
        cfg.name = o.get("guest", cfg.name)
        cfg.debug_threads = as_bool(o.get("debug-threads", False))
    if opts_by.get("uuid"):
        cfg.uuid = opts_by["uuid"][-1].strip()

    for text in opts_by.get("object", []):
        o = parse_option(text, implied="qom-type")
        if str(o.get("qom-type", "")).startswith("memory-backend-"):
            cfg.memory_backends.append(o)
            nodes = o.get("host-nodes")
            if isinstance(nodes, list):
                cfg.policy_nodes.extend(n for n in map(_int, nodes) if n is not None)
            elif nodes is not None:
                with contextlib.suppress(ValueError):
                    cfg.policy_nodes.extend(parse_cpulist(str(nodes).replace(":", ",")))

    machine_backend: str | None = None
    for text in opts_by.get("machine", []) + opts_by.get("M", []):
        o = split_opts(text, implied="type")
        if "accel" in o:
            cfg.accel = str(o["accel"]).split(":")[0]
        machine_backend = o.get("memory-backend", machine_backend)
    for text in opts_by.get("accel", []):
        cfg.accel = str(parse_option(text, implied="accel").get("accel", cfg.accel))
    if "enable-kvm" in flags:
        cfg.accel = "kvm"
    if cfg.accel is None and argv and os.path.basename(argv[0]) in ("qemu-kvm", "kvm"):
        cfg.accel = "kvm"

    for text in opts_by.get("m", []):
        o = split_opts(text, implied="size")
        b = size_bytes(o.get("size", ""), default_shift=20)
        if b is not None:
            cfg.memory_mib = b >> 20
    if cfg.memory_mib is None and machine_backend:
        for be in cfg.memory_backends:
            if be.get("id") == machine_backend and (b := size_bytes(be.get("size", ""))) is not None:
                cfg.memory_mib = b >> 20

    for text in opts_by.get("chardev", []):
        o = split_opts(text, implied="backend")
        if "id" in o:
            cfg.chardevs[str(o["id"])] = o

    for n, text in enumerate(opts_by.get("netdev", [])):
        cfg.netdevs.append(_netdev(parse_option(text, implied="type"), f"netdev{n}"))
    for n, text in enumerate(opts_by.get("nic", []) + opts_by.get("net", [])):
        o = parse_option(text, implied="type")
        if o.get("type") in (None, "nic", "none"):
            continue
        cfg.netdevs.append(_netdev(o, str(o.get("name", f"nic{n}"))))

    for nd in cfg.netdevs:
        if nd.kind == "vhost-user" and nd.chardev in cfg.chardevs:
            ch = cfg.chardevs[nd.chardev]
            nd.socket_path = _chardev_path(ch)
            nd.socket_server = as_bool(ch.get("server", False))
            nd.chardev_fd = _int(ch.get("fd", ""))
    return cfg
