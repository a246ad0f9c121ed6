"""The HTTP endpoint. Loopback by default: metrics reveal VM and thread layout, so binding anywhere else is an
explicit choice (`--listen-public`)."""

from __future__ import annotations

import ipaddress
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from vhtune.errors import UsageError
from vhtune.exporter.collector import StateCollector
from vhtune.exporter.state import ExporterState

DEFAULT_LISTEN = "127.0.0.1:9465"


def parse_listen(text: str, allow_public: bool) -> tuple[str, int]:
    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise UsageError(f"--listen {text!r} is not HOST:PORT", f"e.g. {DEFAULT_LISTEN}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"--listen host {host!r} is not an IP address", f"e.g. {DEFAULT_LISTEN}") from None
    if not addr.is_loopback and not allow_public:
        raise UsageError(
            f"refusing to serve metrics on non-loopback address {host}",
            "pass --listen-public to expose them beyond this host",
        )
    return host, int(port_s)


def serve(state: ExporterState, host: str, port: int) -> tuple[Any, Any]:
    """Start the metrics server in a daemon thread; returns (server, thread) for shutdown."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state))
    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}", "pick another --listen port") from None
