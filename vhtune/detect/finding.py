"""What a detector reports: a Finding with its evidence and ranked recommendations (stable field names:
reports, ``--json``, the exporter and ``vhtune tune auto`` read them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vhtune.tune.knobs import describe_value

SEVERITIES = ("info", "warning", "critical")


def severity_rank(s: str) -> int:
    return SEVERITIES.index(s)


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str  # ">=" or "<="
    value: float
    unit: str
    source: str  # why this number (spec section, kernel default, measurement)

    def crossed(self, v: float) -> bool:
        return v >= self.value if self.op == ">=" else v <= self.value


@dataclass
class Evidence:
    metric: str
    value: float | None  # typical value while the finding held (median of the intervals that crossed)
    threshold: float
    op: str
    unit: str
    source: str
    share: float  # share of the recording's intervals that crossed the threshold
    intervals: int  # how many intervals crossed
    first: str | None = None  # ISO time of the first crossing interval
    last: str | None = None
    note: str = ""

    def _crossing(self) -> str:
        """ "metric value unit op threshold unit": the part short() and sentence() share."""
        v = "n/a" if self.value is None else _fmt(self.value)
        unit = self.unit and " " + self.unit
        return f"{self.metric} {v}{unit} {self.op} {_fmt(self.threshold)}{unit}"

    def short(self) -> str:
        return f"{self._crossing()} in {100 * self.share:.0f} % of intervals"

    def sentence(self) -> str:
        if self.source == "context":
            if self.value is None:
                return f"{self.metric}: {self.note}"
            v = _fmt(self.value)
            return f"{self.metric}: {v}{self.unit and ' ' + self.unit}" + (f" ({self.note})" if self.note else "")
        return f"{self._crossing()} in {self.intervals} interval(s) ({100 * self.share:.0f} %)" + (
            f"; {self.note}" if self.note else ""
        )


@dataclass
class Recommendation:
    rank: int
    knob: str  # a knob name of vhtune/tune (thread-affinity, …) or backend-tunable / guest-option
    target: str  # what it acts on, in `vhtune tune plan --set` target syntax where one exists
    current: Any
    proposed: Any
    command: str  # what an operator types
    expected: str
    risk: str
    rollback: str
    tune_set: str | None = None  # `vhtune tune plan --set ...` when vhtune can apply and roll it back itself
    tune: dict[str, Any] | None = None  # the same as data: {"knob", "target": {ident}, "value"} for tune's Request

    def change(self) -> str:
        """ "current → proposed" as an operator reads them (``SCHED_OTHER nice 0 → SCHED_FIFO 10``)."""
        return f"{describe_value(self.knob, self.current)} → {describe_value(self.knob, self.proposed)}"


@dataclass
class Finding:
    id: str
    title: str
    subject: str  # "vm0", "thread vhtune-q0 (tid 4242)", "tap vht0"
    subject_kind: str  # path / thread / tap
    path: str  # the data path (VM) it belongs to; "" when unknown
    severity: str
    confidence: float
    explanation: str
    evidence: list[Evidence]
    recommendations: list[Recommendation] = field(default_factory=list)
    span: tuple[str | None, str | None] = (None, None)
    score: float = 0.0
    consequence_of: str | None = None  # id of a finding on the same path that explains this one
    details: dict[str, Any] = field(default_factory=dict)
    self_explained: bool = False  # its own evidence is the cause: never demoted to a consequence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def top_knob(self) -> str | None:
        return self.recommendations[0].knob if self.recommendations else None


def _fmt(v: float) -> str:
    if v != v:  # NaN
        return "n/a"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.3g}"
