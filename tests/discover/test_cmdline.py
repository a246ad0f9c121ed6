"""QEMU command-line parsing: both option syntaxes, the shapes libvirt and people write."""

from __future__ import annotations

import pytest

from tests.discover.fakeproc import argv_fixture
from vhtune.discover.qemu_cmdline import is_qemu_argv0, parse_qemu_cmdline, size_bytes, split_opts


def test_split_opts_implied_key_escaped_comma_and_bare_flags() -> None:
    o = split_opts("socket,id=c0,path=/tmp/a,,b.sock,server,nowait", implied="backend")
    assert o == {"backend": "socket", "id": "c0", "path": "/tmp/a,b.sock", "server": "on", "wait": "off"}


@pytest.mark.parametrize(
    ("text", "shift", "expected"),
    [("128M", 20, 128 << 20), ("128", 20, 128 << 20), ("4194304k", 20, 4 << 30), ("2G", 0, 2 << 30)],
)
def test_sizes(text: str, shift: int, expected: int) -> None:
    assert size_bytes(text, default_shift=shift) == expected


def test_qemu_binaries() -> None:
    assert is_qemu_argv0("/usr/bin/qemu-system-x86_64")
    assert is_qemu_argv0("/usr/libexec/qemu-kvm")
    assert not is_qemu_argv0("/usr/bin/qemu-img")
    assert not is_qemu_argv0("python3")


def test_libvirt_json_netdevs_and_memory_backend() -> None:
    cfg = parse_qemu_cmdline(argv_fixture("libvirt-json.args"))
    assert (cfg.name, cfg.uuid, cfg.accel, cfg.memory_mib) == (
        "web01",
        "5b1e3c9a-7d0f-4c1e-9a55-2f6f0c1d9e01",
        "kvm",
        4096,
    )
    assert cfg.debug_threads
    tap, vu = cfg.netdevs
    assert (tap.id, tap.kind, tap.fds, tap.vhostfds, tap.vhost, tap.queues, tap.ifname) == (
        "hostnet0",
        "tap",
        (30, 31),
        (32, 33),
        True,
        2,
        None,
    )
    assert (vu.id, vu.kind, vu.chardev, vu.queues) == ("hostnet1", "vhost-user", "charnet1", 2)
    assert (vu.socket_path, vu.socket_server) == ("/var/run/openvswitch/vhu-web01", True)
    assert cfg.policy_nodes == [1]


def test_libvirt_classic_key_value_and_passed_socket_fd() -> None:
    cfg = parse_qemu_cmdline(argv_fixture("libvirt-classic.args"))
    assert (cfg.name, cfg.accel, cfg.memory_mib) == ("db02", "kvm", 8192)
    tap, vu = cfg.netdevs
    assert (tap.fds, tap.vhostfds, tap.vhost, tap.queues) == ((26, 28), (29, 30), True, 2)
    assert (vu.kind, vu.socket_path, vu.chardev_fd, vu.socket_server) == ("vhost-user", None, 34, False)
    assert cfg.chardevs["charmonitor"]["server"] == "on" and cfg.chardevs["charmonitor"]["wait"] == "off"


def test_hand_written() -> None:
    cfg = parse_qemu_cmdline(argv_fixture("hand-written.args"))
    assert (cfg.name, cfg.accel, cfg.memory_mib, cfg.uuid) == ("myvm", "kvm", 2048, None)
    vu, tap = cfg.netdevs
    assert (vu.socket_path, vu.socket_server, vu.queues) == ("/run/vu0.sock", False, 2)
    assert (tap.ifname, tap.vhost, tap.queues) == ("tap-hw0", True, 1)
    assert cfg.memory_backends[0]["mem-path"] == "/dev/hugepages"


def test_tcg_without_debug_threads_and_nic_shorthand() -> None:
    cfg = parse_qemu_cmdline(argv_fixture("tcg-no-debug-threads.args"))
    assert (cfg.name, cfg.accel, cfg.memory_mib, cfg.debug_threads) == ("plain", "tcg", 512, False)
    vu, nic = cfg.netdevs
    assert (vu.socket_path, vu.socket_server) == ("/tmp/srv.sock", True)
    assert (nic.kind, nic.ifname) == ("tap", "tapnic0")


def test_garbage_does_not_raise() -> None:
    cfg = parse_qemu_cmdline(["qemu-system-x86_64", "-netdev", "{not json", "-m", "lots", "-name"])
    assert cfg.memory_mib is None
    assert cfg.netdevs[0].kind == "?"


@pytest.mark.parametrize(
    "args",
    [
        ["-netdev", "tap,id=t0,queues=four"],
        ["-netdev", "tap,id=t0,fds=\u00b2"],
        ["-netdev", '{"type":"vhost-user","id":"n0","chardev":"c0","queues":null}'],
        ["-object", "memory-backend-ram,id=m0,size=1G,host-nodes=first"],
        ["-object", '{"qom-type":"memory-backend-ram","id":"m0","size":1024,"host-nodes":["a"]}'],
    ],
)
def test_malformed_numbers_do_not_raise(args: list[str]) -> None:
    """Any process named qemu-system-* is parsed, a failing one too: one bad value must not end discovery."""
    cfg = parse_qemu_cmdline(["qemu-system-x86_64", "-name", "bad", *args])
    assert cfg.name == "bad"
    assert all(nd.queues == 1 for nd in cfg.netdevs)
    assert cfg.policy_nodes == []
