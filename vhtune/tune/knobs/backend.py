"""Live tunables of vhtune's own back-end, changed through its control socket (JSON lines, 0600).

Target ident {"pid": back-end pid, "key": tunable}; the socket path is the back-end's own `--control` argument,
read from /proc/PID/cmdline, so a target can only be a running `vhtune backend` that was started with one.
The back-end validates values itself (burst 1..256, busy_poll_us, event_idx, suppression, call_coalesce,
cpus, rx_refill); its refusal comes back as one sentence. Nothing here survives the back-end's restart.
"""

from __future__ import annotations

from pathlib import Path

from vhtune.backend.control_client import ControlClient, control_socket_of
from vhtune.errors import TuneError, VhtuneError
from vhtune.tune.knob import Knob, Value

LIVE_KEYS = ("burst", "busy_poll_us", "event_idx", "suppression", "call_coalesce", "cpus", "rx_refill")


def control_path(pid: int) -> str:
    if not Path(f"/proc/{pid}").exists():
        raise TuneError(f"back-end pid {pid} no longer exists", "re-run `vhtune discover` and plan again")
    path = control_socket_of(pid)
    if path is None:
        raise TuneError(
            f"back-end pid {pid} has no control socket", "start it with `vhtune backend --control PATH` to tune it live"
        )
    return path


class BackendTunableKnob(Knob):
    name = "backend-tunable"

    @property
    def _pid_key(self) -> tuple[int, str]:
        try:
            pid, key = int(self.target.ident["pid"]), str(self.target.ident["key"])
        except (KeyError, ValueError):
            raise TuneError(f"{self.name} needs a target pid=N,key=NAME, got {self.target.label()}") from None
        if key not in LIVE_KEYS:
            raise TuneError(f"{key!r} is not a live back-end tunable", f"live tunables: {', '.join(LIVE_KEYS)}")
        return pid, key

    def _client(self) -> ControlClient:
        return ControlClient(control_path(self._pid_key[0]))

    def normalize(self, value: Value) -> Value:
        if self._pid_key[1] == "cpus" and isinstance(value, int):
            return [value]
        return value

    def read(self) -> Value:
        try:
            return self._client().tunables()[self._pid_key[1]]
        except VhtuneError as exc:
            raise TuneError(f"cannot read back-end tunable: {exc.message}") from None

    def apply(self, value: Value) -> None:
        _, key = self._pid_key
        try:
            self._client().set(**{key: self.normalize(value)})
        except VhtuneError as exc:
            raise TuneError(f"back-end refused {key}={value!r}: {exc.message}") from None

    def command(self, value: Value) -> str:
        import json

        pid, key = self._pid_key
        line = json.dumps({"cmd": "set", key: self.normalize(value)}, separators=(",", ":"))
        return f"echo '{line}' | socat - UNIX-CONNECT:{control_path(pid)}"
