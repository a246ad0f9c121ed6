"""Agent settings: command-line flags, optionally overlaid by a JSON config file that SIGHUP re-reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from vhtune.agent.retention import Retention, parse_age, parse_size
from vhtune.errors import UsageError
from vhtune.exporter.server import DEFAULT_LISTEN


@dataclass(frozen=True)
class AgentConfig:
    listen: str = DEFAULT_LISTEN
    listen_public: bool = False
    record_dir: Path | None = None  # None: segments go to a private scratch dir and only the latest is kept
    retain_size: str = "2G"
    retain_age: str = "7d"
    interval: float = 1.0
    segment: float = 600.0  # seconds per recording segment (a new one starts after each, and on SIGHUP)
    analyze_every: float = 30.0  # seconds between detector runs over the current segment
    refresh: float = 5.0  # re-discovery period: VMs that start or stop are picked up / let go
    config_file: Path | None = None

    def retention(self) -> Retention:
        if self.record_dir is None:
            return Retention(max_bytes=0, max_age_s=0)  # scratch: keep only the segment being written
        return Retention(parse_size(self.retain_size), parse_age(self.retain_age))

    def check(self) -> None:
        self.retention()
        if not 0.1 <= self.interval <= 60:
            raise UsageError(f"--interval {self.interval} is out of range", "use 0.1..60 seconds")
        if not 5 <= self.segment <= 86400:
            raise UsageError(f"--segment {self.segment} is out of range", "use 5..86400 seconds")
        if not 1 <= self.analyze_every <= 3600:
            raise UsageError(f"--analyze-every {self.analyze_every} is out of range", "use 1..3600 seconds")


def load_file(cfg: AgentConfig) -> AgentConfig:
    """Overlay the config file's keys (JSON object, same names as the flags with underscores)."""
    if cfg.config_file is None:
        return cfg
    try:
        data: dict[str, Any] = json.loads(cfg.config_file.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read agent config {cfg.config_file}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"agent config {cfg.config_file} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise UsageError(f"agent config {cfg.config_file} must be a JSON object")
    known = {f.name for f in fields(AgentConfig)}
    unknown = set(data) - known
    if unknown:
        raise UsageError(
            f"agent config has unknown keys: {', '.join(sorted(unknown))}", f"known: {', '.join(sorted(known))}"
        )
    if "record_dir" in data and data["record_dir"] is not None:
        data["record_dir"] = Path(data["record_dir"])
    new = replace(cfg, **data)
    new.check()
    return new


def reload(current: AgentConfig) -> AgentConfig:
    """SIGHUP: re-read the file; the listen address needs a restart, the rest applies from the next segment."""
    new = load_file(current)
    if (new.listen, new.listen_public) != (current.listen, current.listen_public):
        raise UsageError("the listen address cannot change on SIGHUP", "restart the agent to move it")
    return new
