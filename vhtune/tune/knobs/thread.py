"""Thread placement knobs: CPU affinity and scheduling class/priority of one thread (tid).

sched_setaffinity(2)/sched_setscheduler(2) act on a single thread when given a tid, which is what a vhost
worker, a back-end lcore or a vCPU is. Neither survives the thread's exit, so nothing persists past a reboot.
"""

from __future__ import annotations

import os
from typing import Any

from vhtune.discover.model import SCHED_POLICY_NAMES
from vhtune.errors import TuneError
from vhtune.tune.knob import Knob, Value, format_cpulist, parse_cpulist

# The policies this knob sets (named as discovery reads them, SCHED_POLICY_NAMES); SCHED_DEADLINE needs
# sched_setattr(2) and SCHED_EXT a loaded BPF scheduler, so a thread under either is read but not set.
_POLICIES = {
    "other": os.SCHED_OTHER,
    "batch": os.SCHED_BATCH,
    "idle": os.SCHED_IDLE,
    "fifo": os.SCHED_FIFO,
    "rr": os.SCHED_RR,
}
_CHRT_FLAG = {"other": "-o", "batch": "-b", "idle": "-i", "fifo": "-f", "rr": "-r"}
_RESET_ON_FORK = os.SCHED_RESET_ON_FORK  # 0x40000000 (include/uapi/linux/sched.h)


def _tid(knob: Knob) -> int:
    try:
        return int(knob.target.ident["tid"])
    except (KeyError, ValueError):
        raise TuneError(f"{knob.name} needs a target tid=N, got {knob.target.label()}") from None


def _gone(tid: int) -> TuneError:
    return TuneError(f"thread {tid} no longer exists", "re-run `vhtune discover` and plan again")


class ThreadAffinityKnob(Knob):
    name = "thread-affinity"

    @classmethod
    def describe(cls, value: Value) -> str:
        return format_cpulist(value) if isinstance(value, list) else super().describe(value)

    def normalize(self, value: Value) -> Value:
        if isinstance(value, str):
            return parse_cpulist(value)
        if isinstance(value, int):  # "--set thread-affinity tid=N 1" arrives as JSON 1
            return [value]
        try:
            return sorted(int(c) for c in value)
        except (TypeError, ValueError):
            raise TuneError(f"{value!r} is not a CPU list", "write it like 0-2,5") from None

    def read(self) -> Value:
        tid = _tid(self)
        try:
            return sorted(os.sched_getaffinity(tid))
        except ProcessLookupError:
            raise _gone(tid) from None

    def apply(self, value: Value) -> None:
        tid = _tid(self)
        cpus = self.normalize(value)
        online = os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))
        if not cpus or not set(cpus) <= online:
            raise TuneError(f"CPU list {value!r} is empty or names CPUs this host lacks (online: {sorted(online)})")
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            raise _gone(tid) from None
        except OSError as exc:
            raise TuneError(f"cannot set affinity of thread {tid}: {exc.strerror}") from None

    def command(self, value: Value) -> str:
        return f"taskset -pc {format_cpulist(self.normalize(value))} {_tid(self)}"


class ThreadSchedKnob(Knob):
    """Value: {"policy": "other|batch|idle|fifo|rr", "priority": 0-99 (rt only), "nice": -20..19}, plus
    "reset_on_fork": true when the thread has SCHED_RESET_ON_FORK (children start at SCHED_OTHER, nice 0)."""

    name = "thread-sched"

    @staticmethod
    def settable(policy: str) -> bool:
        """Whether this knob can set (and so put back) ``policy``."""
        return policy in _POLICIES

    @classmethod
    def describe(cls, value: Value) -> str:
        """As chrt(1) -p prints it: "SCHED_FIFO 10"; "SCHED_OTHER nice 5" where only nice matters."""
        if not isinstance(value, dict) or "policy" not in value:
            return super().describe(value)
        pol = str(value["policy"])
        text = f"SCHED_{pol.upper()} " + (
            str(value.get("priority", 0)) if pol in ("fifo", "rr") else f"nice {value.get('nice', 0)}"
        )
        return text + (" reset-on-fork" if value.get("reset_on_fork") else "")

    def normalize(self, value: Value) -> Value:
        if not isinstance(value, dict):
            raise TuneError(f"{self.name} takes policy/priority/nice, got {value!r}", 'e.g. {"policy": "fifo"}')
        policy = str(value.get("policy", "other"))
        if policy in SCHED_POLICY_NAMES.values() and policy not in _POLICIES:
            raise TuneError(
                f"vhtune cannot set scheduling policy {policy!r}, so it leaves a thread under it alone (it could not "
                "put it back)",
                "SCHED_DEADLINE needs sched_setattr(2) and SCHED_EXT a loaded BPF scheduler: change it by hand",
            )
        if policy not in _POLICIES:
            raise TuneError(f"unknown scheduling policy {policy!r}", f"use one of {', '.join(_POLICIES)}")
        rt = policy in ("fifo", "rr")
        try:
            prio = int(value.get("priority", 1 if rt else 0))
            nice = int(value.get("nice", 0))
        except (TypeError, ValueError):
            raise TuneError(
                f"{self.name} priority and nice must be integers, got {value!r}", '{"policy": "fifo", "priority": 10}'
            ) from None
        if (rt and not 1 <= prio <= 99) or (not rt and prio != 0):
            raise TuneError(f"priority {prio} is invalid for policy {policy}", "1..99 for fifo/rr, 0 otherwise")
        if not -20 <= nice <= 19:
            raise TuneError(f"nice {nice} is out of range", "-20..19")
        out: dict[str, Any] = {"policy": policy, "priority": prio, "nice": nice}
        if value.get("reset_on_fork"):  # present only when set, so plain values compare as before
            out["reset_on_fork"] = True
        return out

    def read(self) -> Value:
        tid = _tid(self)
        try:
            raw = os.sched_getscheduler(tid)  # the policy, with SCHED_RESET_ON_FORK OR-ed in when set
            prio = os.sched_getparam(tid).sched_priority
            nice = os.getpriority(os.PRIO_PROCESS, tid)  # per-thread when given a tid on Linux
        except ProcessLookupError:
            raise _gone(tid) from None
        pol = raw & ~_RESET_ON_FORK
        out: dict[str, Any] = {"policy": SCHED_POLICY_NAMES.get(pol, str(pol)), "priority": prio, "nice": nice}
        if raw & _RESET_ON_FORK:
            out["reset_on_fork"] = True
        return out

    def apply(self, value: Value) -> None:
        tid = _tid(self)
        v = self.normalize(value)
        try:
            flag = _RESET_ON_FORK if v.get("reset_on_fork") else 0
            os.sched_setscheduler(tid, _POLICIES[v["policy"]] | flag, os.sched_param(v["priority"]))
            os.setpriority(os.PRIO_PROCESS, tid, v["nice"])
        except ProcessLookupError:
            raise _gone(tid) from None
        except OSError as exc:
            raise TuneError(f"cannot set scheduling of thread {tid}: {exc.strerror}") from None

    def command(self, value: Value) -> str:
        v = self.normalize(value)
        tid = _tid(self)
        reset = "-R " if v.get("reset_on_fork") else ""
        return f"chrt {reset}{_CHRT_FLAG[v['policy']]} -p {v['priority']} {tid} && renice -n {v['nice']} -p {tid}"
