"""The CLI edge: expected failures are one sentence and an exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest

from vhtune.cli import cli, main
from vhtune.errors import CapabilityError, RecordingError, VhtuneError


@cli.command("_raise_for_test", hidden=True)
@click.argument("kind")
def _raise_for_test(kind: str) -> None:
    if kind == "cap":
        raise CapabilityError("tracefs is not mounted", "mount -t tracefs nodev /sys/kernel/tracing")
    if kind == "rec":
        raise RecordingError("recording /x is not a vhtune recording")
    if kind == "pipe":
        raise BrokenPipeError(32, "Broken pipe")
    raise RuntimeError("a bug")


@pytest.mark.parametrize(
    ("kind", "code", "first_line"),
    [("cap", 3, "vhtune: error: tracefs is not mounted"), ("rec", 4, "vhtune: error: recording /x is not")],
)
def test_expected_errors_become_one_line(
    kind: str, code: int, first_line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["_raise_for_test", kind])
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert err.startswith(first_line)
    assert "Traceback" not in err


def test_unexpected_errors_keep_their_traceback() -> None:
    with pytest.raises(RuntimeError):
        main(["_raise_for_test", "bug"])


def test_a_broken_pipe_that_is_not_stdout_keeps_its_traceback() -> None:
    # click would turn it into a silent exit 1: a compile child or back-end socket gone must not vanish so.
    with pytest.raises(RuntimeError, match="unexpected broken pipe"):
        main(["_raise_for_test", "pipe"])


def test_a_closed_stdout_reader_ends_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    r, w = os.pipe()
    os.close(r)  # `vhtune … | head` after head exited
    with open(w, "w") as broken:
        monkeypatch.setattr(sys, "stdout", broken)
        with pytest.raises(SystemExit):
            main(["_raise_for_test", "pipe"])
        monkeypatch.undo()
    assert "Traceback" not in capsys.readouterr().err


def test_usage_error_from_click_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "vhtune", "--no-such-flag"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no such option" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr


def test_every_error_has_exit_code_and_str() -> None:
    err = VhtuneError("thing broke", "do this")
    assert str(err) == "thing broke (do this)"
    assert CapabilityError("x").exit_code != VhtuneError("x").exit_code
