"""`vhtune agent`: probes attached continuously, Prometheus metrics on loopback, a rolling recording."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from vhtune.cli import cli
from vhtune.exporter.server import DEFAULT_LISTEN


@cli.command()
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT for /metrics.")
@click.option("--listen-public", is_flag=True, help="Allow a non-loopback --listen address.")
@click.option("--record-dir", type=click.Path(path_type=Path), default=None, help="Keep the rolling recording here.")
@click.option("--retain-size", default="2G", show_default=True, help="Rolling recording size budget.")
@click.option("--retain-age", default="7d", show_default=True, help="Rolling recording age budget.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds per interval.")
@click.option("--segment", default=600.0, show_default=True, help="Seconds per recording segment.")
@click.option("--analyze-every", default=30.0, show_default=True, help="Seconds between detector runs.")
@click.option("--refresh", default=5.0, show_default=True, help="Re-discovery period (s).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None, help="JSON config (SIGHUP).")
def agent(
    listen: str,
    listen_public: bool,
    record_dir: Path | None,
    retain_size: str,
    retain_age: str,
    interval: float,
    segment: float,
    analyze_every: float,
    refresh: float,
    config_file: Path | None,
) -> None:
    """Keep probes attached, serve Prometheus metrics, keep a rolling recording (SIGHUP reloads, SIGTERM stops)."""
    from vhtune.agent.config import AgentConfig, load_file
    from vhtune.agent.run import Agent

    logging.basicConfig(level=logging.INFO, format="vhtune agent: %(message)s")
    cfg = load_file(
        AgentConfig(
            listen=listen,
            listen_public=listen_public,
            record_dir=record_dir,
            retain_size=retain_size,
            retain_age=retain_age,
            interval=interval,
            segment=segment,
            analyze_every=analyze_every,
            refresh=refresh,
            config_file=config_file,
        )
    )
    a = Agent(cfg)
    a.run()
    click.echo(f"vhtune agent: stopped ({a.stop_reason}), {a.segments_done} segment(s) recorded")
