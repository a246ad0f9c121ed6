"""``dpdk-testpmd`` (DPDK 22.11, Debian's dpdk-dev) as a lab peer, driven interactively over a pipe.

Two roles on a vhost-user socket:
- front-end: ``--vdev net_virtio_user0,path=SOCK,queues=N`` connects to a back-end's socket;
- back-end: ``--vdev net_vhost0,iface=SOCK,queues=N`` (DPDK's own vhost PMD, the throughput anchor), optionally
  with ``--vdev net_tap0,iface=NAME`` as port 1 so ``io`` forwarding bridges the vhost port and a tap.

Facts this relies on (measured here): testpmd's stats are printf'd, so its stdout is made line-buffered with
``stdbuf -oL`` or a mid-run ``show port stats all`` sits in the stdio buffer; the forwarding lcores of two
testpmd processes must be on different CPUs (same CPU: ~30 kpps instead of millions); the ``main`` lcore only
runs the prompt and may share a CPU with the other process's forwarding lcore. ``--no-huge -m MB`` memory is
memfd-backed and shareable with the vhost-user peer; hugepages are a shared, scarce resource on this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from vhtune.errors import CapabilityError, LabError, UsageError
from vhtune.lab.names import PREFIX, lab_name, run_dir
from vhtune.lab.netns import Netns
from vhtune.lab.proc import LabProcess, wait_for

TESTPMD = "dpdk-testpmd"
PROMPT = "testpmd> "
FWD_MODES = ("io", "txonly", "rxonly", "macswap", "mac", "flowgen")
Role = Literal["frontend", "backend"]
Memory = Literal["nohuge", "hugepages"]
# EAL's runtime dir when run as root: /var/run/dpdk/<file-prefix> (config, fbarrays, mp socket). testpmd leaves
# it behind when it quits; close() removes it.
RUNTIME_DIR = Path("/var/run/dpdk")


@dataclass
class PortStats:
    """One port's ``show port stats all`` block (NIC counters since start, plus pps since the last show)."""

    port: int
    rx_packets: int = 0
    rx_missed: int = 0
    rx_bytes: int = 0
    rx_errors: int = 0
    rx_nombuf: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_bytes: int = 0
    rx_pps: int = 0
    tx_pps: int = 0


@dataclass
class ForwardStats:
    """One port's forward statistics, printed by ``stop`` (counts since the last ``start``)."""

    port: int
    rx_packets: int = 0
    rx_dropped: int = 0
    tx_packets: int = 0
    tx_dropped: int = 0


@dataclass
class TestpmdConfig:
    role: Role
    socket: Path
    queues: int = 1
    mode: str = "io"
    fwd_cpu: int = 1
    main_cpu: int | None = None
    tap: str | None = None
    memory: Memory = "nohuge"
    mem_mb: int = 256
    txpkts: int = 64
    burst: int = 32
    mbufs: int = 8192
    vdev_args: dict[str, str] = field(default_factory=dict)
    file_prefix: str = ""
    netns: Netns | None = None
    extra_app_args: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.role not in ("frontend", "backend"):
            raise UsageError(f"testpmd role {self.role!r} is not frontend or backend")
        if self.mode not in FWD_MODES:
            raise UsageError(f"testpmd forward mode {self.mode!r} is unknown", hint=f"one of {FWD_MODES}")
        if not 1 <= self.queues <= 16:
            raise UsageError(f"queues={self.queues} is out of range", hint="use 1..16")
        ncpu = os.cpu_count() or 1
        if not 0 <= self.fwd_cpu < ncpu:
            raise UsageError(f"forwarding CPU {self.fwd_cpu} does not exist (this host has {ncpu})")
        if self.tap and self.role != "backend":
            raise UsageError("a tap leg belongs to the testpmd back-end, not the front-end")
        if not 64 <= self.txpkts <= 9000:
            raise UsageError(f"packet size {self.txpkts} is out of range", hint="use 64..9000 bytes")

    def main_lcore(self) -> int:
        if self.main_cpu is not None:
            return self.main_cpu
        ncpu = os.cpu_count() or 1
        # Only the prompt runs on the main lcore; any CPU other than the forwarding one will do.
        return (self.fwd_cpu + 1) % ncpu if ncpu > 1 else self.fwd_cpu

    def argv(self) -> list[str]:
        self.validate()
        main = self.main_lcore()
        if main == self.fwd_cpu:
            raise UsageError("testpmd needs two distinct lcores (main and forwarding); this host has one CPU")
        prefix = self.file_prefix or lab_name("d")
        eal = ["-l", f"{main},{self.fwd_cpu}", "--main-lcore", str(main), "--file-prefix", prefix, "--no-pci"]
        if self.memory == "nohuge":
            eal += ["--no-huge", "-m", str(self.mem_mb)]
        else:
            eal += ["--in-memory", "--single-file-segments", "--socket-mem", str(self.mem_mb)]
        args = {"queues": str(self.queues), **self.vdev_args}
        kv = ",".join(f"{k}={v}" for k, v in args.items())
        if self.role == "frontend":
            eal += ["--vdev", f"net_virtio_user0,path={self.socket},{kv}"]
        else:
            eal += ["--vdev", f"net_vhost0,iface={self.socket},{kv}"]
            if self.tap:
                eal += ["--vdev", f"net_tap0,iface={self.tap}"]
        app = [
            "-i",
            f"--forward-mode={self.mode}",
            "--nb-cores=1",
            f"--rxq={self.queues}",
            f"--txq={self.queues}",
            f"--total-num-mbufs={self.mbufs}",
            f"--burst={self.burst}",
            f"--txpkts={self.txpkts}",
            *self.extra_app_args,
        ]
        return [TESTPMD, *eal, "--", *app]


_NIC_RE = {
    "rx": re.compile(r"RX-packets:\s*(\d+)\s+RX-missed:\s*(\d+)\s+RX-bytes:\s*(\d+)"),
    "rxerr": re.compile(r"RX-errors:\s*(\d+)"),
    "nombuf": re.compile(r"RX-nombuf:\s*(\d+)"),
    "tx": re.compile(r"TX-packets:\s*(\d+)\s+TX-errors:\s*(\d+)\s+TX-bytes:\s*(\d+)"),
    "rxpps": re.compile(r"Rx-pps:\s*(\d+)"),
    "txpps": re.compile(r"Tx-pps:\s*(\d+)"),
}
_NIC_HDR = re.compile(r"#+ NIC statistics for port (\d+)\s+#+")
_FWD_HDR = re.compile(r"-+ Forward statistics for port (\d+)\s+-+")
_FWD_RX = re.compile(r"RX-packets:\s*(\d+)\s+RX-dropped:\s*(\d+)")
_FWD_TX = re.compile(r"TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)")


def parse_port_stats(text: str) -> list[PortStats]:
    """Every ``NIC statistics for port N`` block in ``text``; the last block per port wins."""
    found: dict[int, PortStats] = {}
    parts = _NIC_HDR.split(text)
    # split() with one group yields [before, port, body, port, body, ...].
    for i in range(1, len(parts) - 1, 2):
        port, body = int(parts[i]), parts[i + 1].split("####", 1)[0]
        st = PortStats(port)
        if m := _NIC_RE["rx"].search(body):
            st.rx_packets, st.rx_missed, st.rx_bytes = (int(g) for g in m.groups())
        if m := _NIC_RE["rxerr"].search(body):
            st.rx_errors = int(m.group(1))
        if m := _NIC_RE["nombuf"].search(body):
            st.rx_nombuf = int(m.group(1))
        if m := _NIC_RE["tx"].search(body):
            st.tx_packets, st.tx_errors, st.tx_bytes = (int(g) for g in m.groups())
        if m := _NIC_RE["rxpps"].search(body):
            st.rx_pps = int(m.group(1))
        if m := _NIC_RE["txpps"].search(body):
            st.tx_pps = int(m.group(1))
        found[port] = st
    return [found[p] for p in sorted(found)]


def parse_forward_stats(text: str) -> list[ForwardStats]:
    """Every per-port ``Forward statistics`` block (printed by ``stop``); the last block per port wins."""
    found: dict[int, ForwardStats] = {}
    parts = _FWD_HDR.split(text)
    for i in range(1, len(parts) - 1, 2):
        port, body = int(parts[i]), parts[i + 1].split("------", 1)[0]
        st = ForwardStats(port)
        if m := _FWD_RX.search(body):
            st.rx_packets, st.rx_dropped = int(m.group(1)), int(m.group(2))
        if m := _FWD_TX.search(body):
            st.tx_packets, st.tx_dropped = int(m.group(1)), int(m.group(2))
        found[port] = st
    return [found[p] for p in sorted(found)]


class Testpmd:
    """A running testpmd; ``with Testpmd(cfg) as t:`` launches it and always stops it (quit, then kill)."""

    def __init__(self, cfg: TestpmdConfig, log: Path | None = None) -> None:
        self.cfg = cfg
        # A log the caller did not ask for is removed on close; its text stays in ``output``.
        self._own_log = log is None
        self.log = log or run_dir() / f"{lab_name('t')}-testpmd.log"
        self.output = ""
        self.proc: LabProcess | None = None
        self.started = False
        self.runtime_dir: Path | None = None

    # --- life cycle ---------------------------------------------------------------------------------------
    def launch(self, timeout: float = 20.0) -> Testpmd:
        if shutil.which(TESTPMD) is None or shutil.which("stdbuf") is None:
            raise CapabilityError(f"{TESTPMD} is not installed", hint="run `make setup` (package dpdk-dev)")
        eal = self.cfg.argv()
        self.runtime_dir = RUNTIME_DIR / eal[eal.index("--file-prefix") + 1]
        argv = ["stdbuf", "-oL", *eal]
        if self.cfg.netns is not None:
            argv = self.cfg.netns.argv(argv)
        self.proc = LabProcess(argv, log=self.log, stdin_pipe=True, name="testpmd")
        try:
            wait_for(lambda: PROMPT in self._text(), timeout, "the testpmd prompt", self.proc)
        except BaseException:
            self.close()
            raise
        return self

    def close(self, timeout: float = 10.0) -> None:
        """``stop`` + ``quit`` over the pipe; SIGTERM then SIGKILL of testpmd's own pid group on timeout."""
        if self.proc is None:
            return
        if self.proc.alive():
            with contextlib.suppress(LabError):
                self._send("stop\nquit\n" if self.started else "quit\n")
            self.proc.wait(timeout)
        self.proc.stop(timeout=3.0)
        self.started = False
        self.output = self._text()
        rd = self.runtime_dir
        if rd is not None and rd.name.startswith(PREFIX) and not self.proc.alive():
            shutil.rmtree(rd, ignore_errors=True)
        if self._own_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> Testpmd:
        return self.launch()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise LabError("testpmd is not running")
        return self.proc.pid

    # --- commands --------------------------------------------------------------------------------------
    def _text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _send(self, data: str) -> None:
        if self.proc is None or self.proc.popen.stdin is None or not self.proc.alive():
            raise LabError("testpmd is not running", hint=self.proc.tail() if self.proc else None)
        try:
            self.proc.popen.stdin.write(data.encode())
            self.proc.popen.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise LabError(f"testpmd stopped reading commands: {exc}") from exc

    def cmd(self, line: str, timeout: float = 10.0) -> str:
        """Send one command and return what testpmd printed until its next prompt."""
        if "\n" in line:
            raise UsageError("one testpmd command at a time")
        before = self._text()
        n = before.count(PROMPT)
        self._send(line + "\n")
        wait_for(lambda: self._text().count(PROMPT) > n, timeout, f"testpmd to answer {line!r}", self.proc)
        out = self._text()[len(before) :]
        return out.rsplit(PROMPT, 1)[0]

    def start(self, tx_first: int = 0) -> None:
        """``start``; with ``tx_first`` N, each port first sends N bursts (seeds a loop such as echo ↔ macswap)."""
        self.cmd(f"start tx_first {tx_first}" if tx_first else "start")
        self.started = True

    def stop(self) -> list[ForwardStats]:
        out = self.cmd("stop")
        self.started = False
        return parse_forward_stats(out)

    def port_stats(self) -> list[PortStats]:
        return parse_port_stats(self.cmd("show port stats all"))

    def clear_stats(self) -> None:
        self.cmd("clear port stats all")

    def wait_link(self, timeout: float = 15.0) -> None:
        """Until the vhost port saw its front-end become ready (vhost PMD logs "virtio is now ready")."""
        if self.cfg.role != "backend":
            return
        wait_for(lambda: "is now ready for processing" in self._text(), timeout, "a vhost-user front-end", self.proc)

    def run_for(self, seconds: float) -> list[ForwardStats]:
        """start, forward for ``seconds``, stop; returns the stop's per-port counters."""
        self.start()
        time.sleep(seconds)
        return self.stop()


def frontend(socket: Path, **kw: object) -> Testpmd:
    """A virtio-user front-end testpmd (not launched yet); keyword arguments are ``TestpmdConfig`` fields."""
    return Testpmd(_config("frontend", socket, kw))


def backend(socket: Path, **kw: object) -> Testpmd:
    """A vhost PMD back-end testpmd (not launched yet); keyword arguments are ``TestpmdConfig`` fields."""
    return Testpmd(_config("backend", socket, kw))


def _config(role: Role, socket: Path, kw: dict[str, object]) -> TestpmdConfig:
    names = {f.name for f in dataclasses.fields(TestpmdConfig)} - {"role", "socket"}
    bad = set(kw) - names
    if bad:
        raise UsageError(f"unknown testpmd option(s): {', '.join(sorted(bad))}")
    return TestpmdConfig(role, socket, **kw)  # type: ignore[arg-type]


def total(stats: list[ForwardStats] | list[PortStats], attr: str) -> int:
    return sum(int(getattr(s, attr)) for s in stats)


def lcore_tids(t: Testpmd) -> list[int]:
    """Thread ids of testpmd's forwarding lcores (DPDK 22.11 names them ``rte-worker-N``). ``stdbuf`` and
    ``ip netns exec`` both exec, so the launched pid is testpmd's own."""
    out = []
    for task in Path(f"/proc/{t.pid}/task").glob("*"):
        try:
            if (task / "comm").read_text().startswith("rte-worker"):
                out.append(int(task.name))
        except OSError:
            continue
    return sorted(out)
