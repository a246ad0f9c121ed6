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


def test_queue_pairs_advice_reads_the_vms_netdev() -> None:
    # The VM's command line (discovery's netdevs) says how many queue pairs it has: advice to go to two names that
    # -netdev and its current count, and is not given to a VM that already has two or more.
    from vhtune.analysis.topology import Path as DataPath
    from vhtune.analysis.topology import netdevs_of
    from vhtune.detect.recommend import two_queue_pairs

    vm = {"netdevs": [{"id": "hostnet0", "kind": "tap", "queues": 1}, {"id": "vu0", "kind": "vhost-user"}]}
    path = DataPath("vm0", frontend_pids=[7], backend_kind="vhtune", netdevs=netdevs_of(vm))
    [r] = two_queue_pairs(path, "more", "risk")
    assert (r.current, r.proposed, r.target) == (1, 2, "vm=vm0,netdev=vu0")
    assert two_queue_pairs(DataPath("vm0", backend_kind="vhost-net", netdevs=netdevs_of(vm)), "e", "r")[0].current == 1
    multi = {"netdevs": [{"id": "vu0", "kind": "vhost-user", "queues": 4}]}
    assert two_queue_pairs(DataPath("vm0", backend_kind="dpdk", netdevs=netdevs_of(multi)), "e", "r") == []
    assert two_queue_pairs(DataPath("vm0"), "e", "r")[0].current == "unknown"  # no discovery: said, not guessed
