"""FdTableWatch on a fake /proc: new fds trigger, closed fds and first sightings do not."""

from __future__ import annotations

from pathlib import Path

from vhtune.record.fdwatch import FdTableWatch


def _fds(proc: Path, pid: int, *fds: int) -> None:
    d = proc / str(pid) / "fd"
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    for fd in fds:
        (d / str(fd)).touch()


def test_only_new_descriptors_of_known_processes_count(tmp_path: Path) -> None:
    w = FdTableWatch(tmp_path)
    _fds(tmp_path, 10, 0, 1, 2)
    assert not w.grew([10])  # baseline
    assert not w.grew([10])
    _fds(tmp_path, 10, 0, 1)
    assert not w.grew([10])  # a close is not a new queue
    _fds(tmp_path, 10, 0, 1, 7, 8)
    assert w.grew([10])  # SET_VRING_KICK / CALL delivered two eventfds
    _fds(tmp_path, 20, 0, 1, 2, 3)
    assert not w.grew([10, 20])  # a process seen for the first time only sets its baseline
    assert not w.grew([10, 20, 30])  # a pid without /proc entry is skipped
