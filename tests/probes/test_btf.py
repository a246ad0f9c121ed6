"""BTF parser: the real vmlinux blob against bpftool's own reading of it, edge cases on a synthetic blob."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vhtune.errors import CapabilityError
from vhtune.probes import btf
from vhtune.probes.btf import Btf

BPFTOOL = "/usr/sbin/bpftool"
_TYPE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
_ITEM = re.compile(r"^\t'([^']*)' (?:type_id=(\d+))?(.*)$")


# ---- independent truth: bpftool btf dump ... format raw ----


@pytest.fixture(scope="session")
def raw() -> dict[int, dict[str, Any]]:
    """id -> {kind, name, attrs (key=value of the type line), items: [(name, type_id, attrs)]}."""
    out = subprocess.run(
        [BPFTOOL, "btf", "dump", "file", str(btf.VMLINUX), "format", "raw"], capture_output=True, text=True, check=True
    ).stdout
    types: dict[int, dict[str, Any]] = {}
    cur: dict[str, Any] = {}
    for line in out.splitlines():
        if m := _TYPE.match(line):
            cur = {"kind": m[2], "name": m[3], "attrs": dict(re.findall(r"(\w+)=(\S+)", m[4])), "items": []}
            types[int(m[1])] = cur
        elif (m := _ITEM.match(line)) and m[2]:
            cur["items"].append((m[1], int(m[2]), dict(re.findall(r"(\w+)=(\S+)", m[3]))))
    return types


@pytest.fixture(scope="session")
def real() -> Btf:
    return btf.load()


def _find(raw: dict[int, dict[str, Any]], kind: str, name: str) -> int:
    return next(
        t for t, v in raw.items() if v["kind"] == kind and v["name"] == name and (v["items"] or kind != "STRUCT")
    )


def _bpftool_offset(raw: dict[int, dict[str, Any]], tid: int, member: str) -> tuple[int, int] | None:
    """(bits_offset, type_id) of ``member`` in struct ``tid``, following anonymous members by type id."""
    for name, mtype, attrs in raw[tid]["items"]:
        if name == member:
            return int(attrs["bits_offset"]), mtype
        if name == "(anon)" and raw[mtype]["kind"] in ("STRUCT", "UNION"):
            inner = _bpftool_offset(raw, mtype, member)
            if inner:
                return int(attrs["bits_offset"]) + inner[0], inner[1]
    return None


def _bpftool_size(raw: dict[int, dict[str, Any]], tid: int) -> int:
    t = raw[tid]
    if t["kind"] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        return _bpftool_size(raw, int(t["attrs"]["type_id"]))
    if t["kind"] == "PTR":
        return 8
    if t["kind"] == "ARRAY":
        return int(t["attrs"]["nr_elems"]) * _bpftool_size(raw, int(t["attrs"]["type_id"]))
    return int(t["attrs"]["size"])


def _bpftool_name(raw: dict[int, dict[str, Any]], tid: int) -> str:
    if tid == 0:
        return "void"
    t = raw[tid]
    tag = {"STRUCT": "struct ", "UNION": "union ", "ENUM": "enum ", "ENUM64": "enum ", "FWD": "struct "}
    if t["kind"] == "PTR":
        inner = _bpftool_name(raw, int(t["attrs"]["type_id"]))
        return inner + ("*" if inner.endswith("*") else " *")
    if t["kind"] == "CONST":
        return "const " + _bpftool_name(raw, int(t["attrs"]["type_id"]))
    return tag.get(t["kind"], "") + t["name"]


MEMBERS = [
    ("sk_buff", "dev"),
    ("sk_buff", "skb_iif"),
    ("sk_buff", "len"),
    ("net_device", "name"),
    ("net_device", "ifindex"),
    ("net_device", "nd_net"),  # + net->ns.inum: the netns inode the counters variant reads on a dev_cache miss
    ("net", "ns"),
    ("ns_common", "inum"),
    ("task_struct", "pid"),
]


@pytest.mark.parametrize(("struct_name", "member"), MEMBERS)
def test_real_offsets_and_sizes_match_bpftool(
    raw: dict[int, dict[str, Any]], real: Btf, struct_name: str, member: str
) -> None:
    found = _bpftool_offset(raw, _find(raw, "STRUCT", struct_name), member)
    assert found is not None
    bits, mtype = found
    assert bits % 8 == 0
    assert real.member_offset(struct_name, member) == bits // 8
    assert real.member_size(struct_name, member) == _bpftool_size(raw, mtype)


def test_real_sizes_callers_rely_on(real: Btf) -> None:
    assert real.member_size("net_device", "name") == 16  # IFNAMSIZ
    assert real.member_size("net_device", "ifindex") == 4
    assert real.member_size("sk_buff", "dev") == 8


@pytest.mark.parametrize("tp", ["kfree_skb", "netif_receive_skb", "sched_switch"])
def test_real_tracepoint_args_match_bpftool(raw: dict[int, dict[str, Any]], real: Btf, tp: str) -> None:
    ptr = raw[_find(raw, "TYPEDEF", f"btf_trace_{tp}")]["attrs"]["type_id"]
    proto = raw[int(raw[int(ptr)]["attrs"]["type_id"])]
    assert proto["kind"] == "FUNC_PROTO"
    first, *params = [_bpftool_name(raw, t) for _, t, _ in proto["items"]]
    assert first == "void *"  # the tracepoint's __data, not an argument
    assert real.tracepoint_args(tp) == params


def test_kfree_skb_reason_index(real: Btf) -> None:
    args = real.tracepoint_args("kfree_skb")
    assert args[0] == "struct sk_buff *"
    assert "enum skb_drop_reason" in args  # ctx->args[args.index(...)] in a raw_tp program


# ---- synthetic blob ----

INT, PTR, ARRAY, STRUCT, UNION, ENUM, TYPEDEF, CONST = 1, 2, 3, 4, 5, 6, 8, 10
FUNC, FUNC_PROTO, VAR, DATASEC, DECL_TAG, ENUM64 = 12, 13, 14, 15, 17, 19


class Blob:
    def __init__(self) -> None:
        self.strs = bytearray(b"\0")
        self.types = bytearray()

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strs)
        self.strs += name.encode() + b"\0"
        return off

    def t(self, kind: int, name: str, ref: int, *tail: int, vlen: int = 0, kflag: int = 0) -> None:
        info = kflag << 31 | kind << 24 | vlen
        self.types += struct.pack("<3I", self.s(name), info, ref)
        self.types += struct.pack(f"<{len(tail)}I", *tail)

    def bytes(self, magic: int = 0xEB9F) -> bytes:
        hdr = struct.pack("<HBBIIIII", magic, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strs))
        return hdr + bytes(self.types) + bytes(self.strs)


def synthetic() -> Blob:
    b = Blob()
    b.t(INT, "int", 4, 32)  # 1
    b.t(INT, "char", 1, 8)  # 2
    b.t(PTR, "", 0)  # 3: void *
    b.t(UNION, "", 8, b.s("a"), 1, 0, b.s("p"), 3, 0, vlen=2)  # 4: union { int a; void *p; }
    # 5: struct outer { int x; union {...}; int flags:3; char name[4]; }  (kind_flag: bitfield_size << 24)
    b.t(
        STRUCT,
        "outer",
        24,
        b.s("x"),
        1,
        0,
        0,
        4,
        64,
        b.s("flags"),
        1,
        3 << 24 | 128,
        b.s("name"),
        6,
        160,
        vlen=4,
        kflag=1,
    )
    b.t(ARRAY, "", 0, 2, 1, 4)  # 6: char[4]
    b.t(TYPEDEF, "outer_t", 5)  # 7
    b.t(CONST, "", 7)  # 8: const outer_t
    b.t(STRUCT, "plain", 28, b.s("c"), 8, 0, b.s("old_bf"), 10, 192, vlen=2)  # 9: no kind_flag
    b.t(INT, "int", 4, 5)  # 10: old-style bitfield: INT with nr_bits 5
    b.t(ENUM, "color", 4, b.s("RED"), 0, vlen=1)  # 11
    b.t(FUNC_PROTO, "", 0, 0, 3, 0, 13, 0, 11, vlen=3)  # 12: void (*)(void *, struct outer *, enum color)
    b.t(PTR, "", 5)  # 13
    b.t(PTR, "", 12)  # 14
    b.t(TYPEDEF, "btf_trace_demo", 14)  # 15
    b.t(TYPEDEF, "btf_trace_bad", 1)  # 16
    b.t(DECL_TAG, "tag", 5, 0xFFFFFFFF)  # 17
    b.t(ENUM64, "big", 8, b.s("HUGE"), 0, 1, vlen=1)  # 18
    b.t(FUNC, "f", 12)  # 19
    b.t(VAR, "v", 1, 1)  # 20
    b.t(DATASEC, ".data", 4, 20, 0, 4, vlen=1)  # 21
    b.t(STRUCT, "outer", 0, vlen=0)  # 22: an empty duplicate is not preferred
    return b


@pytest.fixture
def syn() -> Btf:
    return btf.parse(synthetic().bytes())


def test_synthetic_offsets_through_anonymous_union_typedef_const(syn: Btf) -> None:
    assert len(syn.start) == 23  # void + 22 records: every tail length was right
    assert syn.member_offset("outer", "x") == 0
    assert syn.member_offset("outer", "a") == 8
    assert syn.member_offset("outer", "p") == 8
    assert syn.member_size("outer", "p") == 8
    assert (syn.member_offset("outer", "name"), syn.member_size("outer", "name")) == (20, 4)
    assert syn.member_offset("outer_t", "a") == 8
    assert syn.member_size("plain", "c") == 24


def test_synthetic_tracepoint_args(syn: Btf) -> None:
    assert syn.tracepoint_args("demo") == ["struct outer *", "enum color"]
    assert syn.type_name(12) == "void (*)(void *, struct outer *, enum color)"
    assert syn.type_name(8) == "const outer_t"
    with pytest.raises(CapabilityError, match="not a pointer to a function prototype"):
        syn.tracepoint_args("bad")
    with pytest.raises(CapabilityError, match="btf_trace_nope"):
        syn.tracepoint_args("nope")


@pytest.mark.parametrize(("s", "m"), [("outer", "flags"), ("plain", "old_bf")])
def test_bitfields_are_refused(syn: Btf, s: str, m: str) -> None:
    with pytest.raises(CapabilityError, match="bitfield"):
        syn.member_offset(s, m)


def test_missing_struct_and_member(syn: Btf) -> None:
    with pytest.raises(CapabilityError, match="'nosuch'") as e:
        syn.member_offset("nosuch", "x")
    assert e.value.hint and "layout differs" in e.value.hint
    with pytest.raises(CapabilityError, match="no member 'y'"):
        syn.member_offset("outer", "y")
    with pytest.raises(CapabilityError):
        syn.member_offset("out", "x")  # a prefix of a name is not the name


def test_bad_blobs(tmp_path: Path) -> None:
    with pytest.raises(CapabilityError, match="magic"):
        btf.parse(synthetic().bytes(magic=0x9FEB))
    with pytest.raises(CapabilityError, match="magic"):
        btf.parse(b"")
    cut = synthetic().bytes()
    hdr = bytearray(cut[:24])
    hdr[12:16] = struct.pack("<I", len(synthetic().types) - 4)  # type_len ends inside the last record
    with pytest.raises(CapabilityError, match="inside a type record"):
        btf.parse(bytes(hdr) + cut[24:])
    b = Blob()
    b.t(31, "x", 0)
    with pytest.raises(CapabilityError, match="kind 31"):
        btf.parse(b.bytes())
    with pytest.raises(CapabilityError, match="cannot read") as e:
        btf.load(tmp_path / "absent")
    assert e.value.hint and "CONFIG_DEBUG_INFO_BTF" in e.value.hint
    path = tmp_path / "vmlinux"
    path.write_bytes(synthetic().bytes())
    assert btf.load(path).member_offset("outer", "a") == 8
