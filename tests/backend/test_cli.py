"""`vhtune backend` as a user runs it: exit report on SIGINT, one-sentence errors for bad input."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.backend.frontend import Frontend
from tests.conftest import Child
from vhtune.backend import net


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vhtune", "backend", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_sigint_prints_the_stats_table(short_tmp: Path) -> None:
    sock = str(short_tmp / "vu.sock")
    argv = [sys.executable, "-m", "vhtune", "backend", "--socket", sock, "--port", "sink"]
    with Child(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        with Frontend.connect(sock, timeout=20) as fe:
            fe.start()
            fe.tx(1, [net.make_frame(64)] * 7)
            assert len(fe.wait_used(1, 7)) == 7
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "per-queue stats" in out and "Traceback" not in err
    rows = [line.replace("\u2502", " ").split() for line in out.splitlines()]  # rich's column rule
    assert next(r for r in rows if r[:2] == ["1", "tx"])[2] == "7"
    assert not Path(sock).exists()


def test_bad_input_is_one_sentence(short_tmp: Path) -> None:
    busy = short_tmp / "busy.sock"
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(busy))
    listener.listen(1)
    (short_tmp / "file").write_text("x")
    cases = [
        (["--socket", str(busy)], "is in use by a running process"),
        (["--socket", str(short_tmp / "file")], "exists and is not a socket"),
        (["--socket", str(short_tmp / "s"), "--port", "bogus"], "unknown port 'bogus'"),
        (["--socket", str(short_tmp / "s"), "--cpu", "x"], "bad CPU list"),
        (["--socket", str(short_tmp / "s"), "--queue-cpu", "x"], "bad --queue-cpu 'x'"),
        (["--socket", str(short_tmp / "s"), "--burst", "0"], "burst must be an integer in 1..256"),
        (["--socket", str(short_tmp / "s"), "--queues", "0"], "--queues 0 must be 1..128"),
        (["--socket", "/proc/vhtune-no.sock"], "cannot bind /proc/vhtune-no.sock"),
        (["--socket", str(short_tmp / "s"), "--port", "tap:vhbx0@vhb-no-such-ns"], "does not exist"),
    ]
    try:
        for args, msg in cases:
            r = run_cli(*args)
            assert r.returncode != 0, args
            assert msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    finally:
        listener.close()
