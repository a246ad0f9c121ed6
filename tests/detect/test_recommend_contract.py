"""Recommendations speak vhtune tune's language: every ``tune_set`` line parses with `vhtune tune plan`'s own
parser into the knob, target and value of ``tune``, and every command is the knob's own command text."""

from __future__ import annotations

import shlex
from pathlib import Path

from vhtune import api
from vhtune.analysis.synthetic import FAULTS, SynthSpec, write_synthetic
from vhtune.cli.tune_cmd import KNOB_TARGET_KIND, _parse_target, _parse_value
from vhtune.tune.knobs import make_knob


def test_tune_set_lines_parse_with_the_tune_cli(tmp_path: Path) -> None:
    faults = {i: f for i, f in enumerate(FAULTS)}
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=len(FAULTS), duration_s=6, faults=faults, cpus=32, nodes=2))
    seen = set()
    for f in api.analyze(api.load(d)):
        for r in f.recommendations:
            if r.tune_set is None:
                assert r.knob not in KNOB_TARGET_KIND, r  # a knob vhtune tune has must come with its --set line
                continue
            argv = shlex.split(r.tune_set)
            assert argv[:4] == ["vhtune", "tune", "plan", "--set"]
            knob, target, value = argv[4:7]
            assert knob == r.knob and knob in KNOB_TARGET_KIND
            t = _parse_target(knob, target)
            k = make_knob(knob, t)
            assert r.tune is not None and t.ident == r.tune["target"]
            assert k.normalize(_parse_value(value)) == k.normalize(r.tune["value"])
            if knob != "backend-tunable":  # its command names the live back-end's control socket (/proc/PID)
                assert r.command.startswith(k.command(_parse_value(value)).split("   #")[0])
            seen.add(knob)
    assert seen == {
        "thread-affinity",
        "thread-sched",
        "tap-txqueuelen",
        "qemu-option",
        "module-param",
        "backend-tunable",
    }
