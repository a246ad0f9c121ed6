"""Real namespaces, veths and taps: created, used (ping across), and gone afterwards."""

from __future__ import annotations

import pytest

from vhtune.errors import LabError, UsageError
from vhtune.lab import names, netns
from vhtune.lab.proc import run


def test_lab_names_fit_ifnamsiz() -> None:
    n = names.lab_name("ab", pid=4194304)
    assert len(n) <= names.IFNAMSIZ and n.startswith(names.PREFIX)
    assert names.pid_of(n) == 4194304
    assert names.pid_of("eth0") is None
    with pytest.raises(UsageError):
        names.lab_name("toolong")
    with pytest.raises(UsageError):
        names.check_ifname("a" * 16)


def test_veth_between_two_namespaces_pings(no_leftovers: None) -> None:
    with netns.Netns() as a, netns.Netns() as b:
        assert a.name in netns.list_netns() and b.name in netns.list_netns()
        ia, ib = names.lab_name("va"), names.lab_name("vb")
        netns.veth_pair(a, ia, b, ib)
        a.addr(ia, "10.77.0.1/24")
        b.addr(ib, "10.77.0.2/24")
        out = a.run(["busybox", "ping", "-c", "3", "-W", "2", "10.77.0.2"], timeout=10).stdout
        assert " 0% packet loss" in out
        st = b.link_stats(ib)
        assert st["rx_packets"] >= 3
        # The pair never appears in the root namespace.
        assert ia not in netns.link_names() and ib not in netns.link_names()
    assert a.name not in netns.list_netns() and b.name not in netns.list_netns()


def test_tap_inside_namespace_and_teardown_on_error(no_leftovers: None) -> None:
    name = None
    with pytest.raises(RuntimeError), netns.Netns() as ns:
        name = ns.name
        t = names.lab_name("tp")
        netns.tap(ns, t)
        assert ns.has_link(t) and not netns.link_exists(t)
        raise RuntimeError("body failed")
    assert name not in netns.list_netns()


def test_duplicate_netns_is_a_clear_error(no_leftovers: None) -> None:
    with netns.Netns() as ns, pytest.raises(LabError, match="already exists"):
        netns.Netns(ns.name).create()


def test_netns_removed_when_its_setup_fails_after_creation(no_leftovers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ip netns add` worked, bringing lo up failed: `with Netns()` raised before its body, the netns is gone."""

    def failing_lo_up(argv: list[str], **kw: object) -> object:
        if argv[-2:] == ["lo", "up"]:
            raise LabError("induced: lo up failed")
        return run(argv, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(netns, "run", failing_lo_up)
    ns = netns.Netns()
    try:
        with pytest.raises(LabError, match="induced"), ns:
            pass
        assert ns.name not in netns.list_netns()
    finally:
        run(["ip", "netns", "del", ns.name], check=False)
