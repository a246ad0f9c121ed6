"""Every knob vhtune can change, by stable name."""

from __future__ import annotations

from vhtune.errors import TuneError
from vhtune.tune.knob import Knob, Target
from vhtune.tune.knobs.backend import BackendTunableKnob
from vhtune.tune.knobs.cgroup import CgroupCpusetKnob
from vhtune.tune.knobs.kernel import ModuleParamKnob, SysctlKnob
from vhtune.tune.knobs.planned import QemuOptionKnob
from vhtune.tune.knobs.queue_mask import QueueMaskKnob
from vhtune.tune.knobs.tap import TapTxQueueLenKnob
from vhtune.tune.knobs.thread import ThreadAffinityKnob, ThreadSchedKnob

KNOBS: dict[str, type[Knob]] = {
    k.name: k
    for k in (
        ThreadAffinityKnob,
        ThreadSchedKnob,
        TapTxQueueLenKnob,
        SysctlKnob,
        ModuleParamKnob,
        QemuOptionKnob,
        BackendTunableKnob,
        QueueMaskKnob,
        CgroupCpusetKnob,
    )
}


def make_knob(name: str, target: Target) -> Knob:
    try:
        cls = KNOBS[name]
    except KeyError:
        raise TuneError(f"there is no knob named {name!r}", f"known knobs: {', '.join(sorted(KNOBS))}") from None
    return cls(target)


def describe_value(knob: str, value: object) -> str:
    """``value`` of the knob named ``knob`` as a table shows it; knobs vhtune does not have print it as is."""
    cls = KNOBS.get(knob)
    return cls.describe(value) if cls is not None else Knob.describe(value)
