"""`vhtune tune plan|apply|verify|rollback`: change knobs safely, with a journal of old values."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from vhtune.cli import cli
from vhtune.cli.output import console, emit_json, table
from vhtune.discover import discover
from vhtune.errors import TuneError, UsageError
from vhtune.tune.engine import Request, apply_plan, make_plan, rollback_plan, verify_plan
from vhtune.tune.knob import Target
from vhtune.tune.knobs import KNOBS, describe_value
from vhtune.tune.plan import Plan, load_plan
from vhtune.tune.targets import KNOB_TARGET_KIND


def _parse_target(knob: str, text: str) -> Target:
    ident: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, sep, val = part.partition("=")
        if not sep:
            raise UsageError(f"target {text!r} is not key=value[,key=value]", "e.g. tid=1234 or dev=tap0,netns=ns1")
        ident[key] = int(val) if val.isdigit() else val
    return Target(KNOB_TARGET_KIND[knob], ident)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _render_plan(plan: Plan) -> None:
    rows = [
        (
            c.knob,
            c.target.label(),
            describe_value(c.knob, c.current),
            describe_value(c.knob, c.proposed),
            "restart" if c.restart_required else ("no-op" if c.is_noop else "runtime"),
            c.command,
        )
        for c in plan.changes
    ]
    out = console()
    out.print(table(f"plan {plan.id}", ["knob", "target", "current", "proposed", "kind", "command"], rows))
    out.print(f"\napply with: vhtune tune apply {plan.id}")


@cli.group()
def tune() -> None:
    """Plan, apply, verify and roll back tuning changes (old values journaled before any write)."""


@tune.command("plan")
@click.option(
    "--set",
    "sets",
    nargs=3,
    multiple=True,
    metavar="KNOB TARGET VALUE",
    help=f"One change, e.g. --set thread-affinity tid=1234 0-1. Knobs: {', '.join(KNOBS)}.",
)
@click.option("--json", "as_json", is_flag=True)
def plan_cmd(sets: tuple[tuple[str, str, str], ...], as_json: bool) -> None:
    """Dry run: show current → proposed for each change, and save the plan."""
    if not sets:
        raise UsageError("nothing to plan", "give at least one --set KNOB TARGET VALUE")
    reqs = []
    for knob, target, value in sets:
        if knob not in KNOB_TARGET_KIND:
            raise TuneError(f"there is no knob named {knob!r}", f"known knobs: {', '.join(KNOB_TARGET_KIND)}")
        reqs.append(Request(knob, _parse_target(knob, target), _parse_value(value), reason="--set"))
    plan = make_plan(reqs, discover(guest_memory_numa=False))
    if as_json:
        emit_json(plan.to_json())
    else:
        _render_plan(plan)


@tune.command("apply")
@click.argument("plan_id", required=False)
@click.option("--yes", is_flag=True, help="Apply the most recent plan without naming its id.")
@click.option("--json", "as_json", is_flag=True)
def apply_cmd(plan_id: str | None, yes: bool, as_json: bool) -> None:
    """Apply a saved plan (by id, or the latest with --yes)."""
    if plan_id is None and not yes:
        raise UsageError("apply needs the plan id that `vhtune tune plan` printed", "or pass --yes for the latest")
    plan = load_plan(plan_id)
    applied = apply_plan(plan, lambda: discover(guest_memory_numa=False))
    if as_json:
        emit_json({"plan": plan.id, "applied": applied})
    else:
        click.echo(f"plan {plan.id}: applied {len(applied)} change(s); roll back with: vhtune tune rollback {plan.id}")


@tune.command("verify")
@click.argument("plan_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def verify_cmd(ctx: click.Context, plan_id: str | None, as_json: bool) -> None:
    """Check that every applied value is still in place (exit 1 when one drifted)."""
    plan = load_plan(plan_id)
    rows = verify_plan(plan)
    if as_json:
        emit_json({"plan": plan.id, "rows": [{"change": r.change, "current": r.current, "ok": r.ok} for r in rows]})
    else:
        console().print(
            table(
                f"verify {plan.id}",
                ["knob", "target", "expected", "current", "ok"],
                [
                    (
                        r.change.knob,
                        r.change.target.label(),
                        describe_value(r.change.knob, r.change.proposed),
                        describe_value(r.change.knob, r.current),
                        r.ok,
                    )
                    for r in rows
                ],
            )
        )
    if not all(r.ok for r in rows):
        ctx.exit(1)


@tune.command("rollback")
@click.argument("plan_id", required=False)
@click.option("--json", "as_json", is_flag=True)
def rollback_cmd(plan_id: str | None, as_json: bool) -> None:
    """Restore every old value from the journal (works after a crash mid-apply)."""
    plan = load_plan(plan_id)
    done = rollback_plan(plan.id)
    if as_json:
        emit_json({"plan": plan.id, "restored": done})
    else:
        click.echo(f"plan {plan.id}: restored {len(done)} value(s)")


@tune.command("auto")
@click.option("--scenario", default=None, help="Start this lab scenario as the live data path (vhtune lab list).")
@click.option("--fault", "faults", multiple=True, help="Lab fault(s) for --scenario (vhtune lab list).")
@click.option("--backend", default="vhtune", show_default=True, help="Lab back-end for --scenario.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Output directory.")
@click.option("--window", default=5.0, show_default=True, help="Seconds per recording (before and after).")
@click.option("--min-gain", default=0.25, show_default=True, help="Keep the change only above this relative gain.")
@click.option("--tries", default=2, show_default=True, help="Recommendations to try in rank order.")
@click.option("--only", multiple=True, help="Consider only these finding ids.")
@click.option("--set", "manual", nargs=3, default=None, metavar="KNOB TARGET VALUE", help="Try this change instead.")
@click.option("--metric", default=None, help="With --set: judge by this finding id's target metric.")
@click.option("--json", "as_json", is_flag=True)
def auto_cmd(
    scenario: str | None,
    faults: tuple[str, ...],
    backend: str,
    out: Path | None,
    window: float,
    min_gain: float,
    tries: int,
    only: tuple[str, ...],
    manual: tuple[str, str, str] | None,
    metric: str | None,
    as_json: bool,
) -> None:
    """Closed loop: record → analyze → apply the top fix → record again → keep it or roll it back."""
    from vhtune.tune.auto import AutoOptions, run_auto
    from vhtune.tune.live import live_scenario, resolve_auto_target

    out = out or Path(f"vhtune-auto-{time.strftime('%Y%m%d-%H%M%S')}")
    opts = AutoOptions(out=out, window_s=window, min_gain=min_gain, max_tries=tries, only=only, manual_metric=metric)
    # The scenario must outlive the baseline and every try (a recording, probe compilation, analysis, settling:
    # generous, since a busy host stretches them); it is stopped as soon as the loop is done.
    duration = min(300.0, (1 + (1 if manual else tries)) * (window + 30) + 30)
    with live_scenario(scenario, list(faults), backend, duration) as live:
        opts.backend_pids = live.backend_pids
        if manual is not None:
            knob, target, value = manual
            if knob not in KNOB_TARGET_KIND:
                raise TuneError(f"there is no knob named {knob!r}", f"known knobs: {', '.join(KNOB_TARGET_KIND)}")
            opts.manual = Request(knob, resolve_auto_target(_parse_target(knob, target), live), _parse_value(value))
        res = run_auto(opts)
    if as_json:
        emit_json({"auto": res, "lab": live.summary})
        return
    for i, a in enumerate(res.attempts, 1):
        click.echo(f"try {i}: {a.finding['id']} on {a.finding['subject']}: {a.decision} — {a.reason}")
    click.echo(f"decision: {res.decision}{' — ' + res.reason if not res.attempts else ''}")
    click.echo(f"report:   {out / 'auto.html'}")
