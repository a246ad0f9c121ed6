"""Struct member offsets and raw-tracepoint argument positions from the running kernel's BTF.

The installed kernel headers may belong to another kernel (this host: headers 6.1, kernel 6.18), so struct
offsets taken from them are wrong. ``/sys/kernel/btf/vmlinux`` describes the running kernel exactly.

Format (Documentation/bpf/btf.rst, include/uapi/linux/btf.h), all fields host-endian u32 unless noted:
  header: u16 magic 0xeB9F, u8 version, u8 flags, u32 hdr_len, then type_off, type_len, str_off, str_len
          (offsets relative to the END of the header, i.e. to hdr_len).
  string section: NUL-terminated strings; a name_off indexes into it, 0 is the empty name (anonymous).
  type section: records ``struct btf_type {u32 name_off; u32 info; u32 size_or_type}``; type ids count the
          records from 1 (id 0 is void). info: vlen = bits 0-15, kind = bits 24-28, kind_flag = bit 31.
          Each record is followed by kind-specific data, whose length the table ``_TAIL`` gives.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from vhtune.errors import CapabilityError

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F
POINTER_SIZE = 8  # BTF does not encode pointer width; vhtune runs on 64-bit kernels only

# BTF_KIND_* values
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
# Words (u32) after the 3-word btf_type, as (fixed, per vlen item), per kind:
#   INT: u32 encoding (bits 0-7 nr_bits, bits 16-23 bit offset); ARRAY: btf_array {type, index_type, nelems};
#   STRUCT/UNION: vlen x btf_member {name_off, type, offset}; ENUM: vlen x btf_enum {name_off, s32 val};
#   FUNC_PROTO: vlen x btf_param {name_off, type}; VAR: btf_var {linkage};
#   DATASEC: vlen x btf_var_secinfo {type, offset, size}; DECL_TAG: btf_decl_tag {s32 component_idx};
#   ENUM64: vlen x btf_enum64 {name_off, val_lo32, val_hi32}; PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT,
#   TYPE_TAG: nothing.
_TAIL: dict[int, tuple[int, int]] = {
    INT: (1, 0),
    ARRAY: (3, 0),
    STRUCT: (0, 3),
    UNION: (0, 3),
    ENUM: (0, 2),
    FUNC_PROTO: (0, 2),
    VAR: (1, 0),
    DATASEC: (0, 3),
    DECL_TAG: (1, 0),
    ENUM64: (0, 3),
    **{k: (0, 0) for k in (PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG)},
}
_SKIP = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)  # kinds whose third word is the type they qualify
_KIND_NAMES = {
    STRUCT: "struct",
    UNION: "union",
    TYPEDEF: "typedef",
    CONST: "const",
    VOLATILE: "volatile",
    RESTRICT: "restrict",
}
_HINT_BLOB = "vhtune needs a kernel built with CONFIG_DEBUG_INFO_BTF=y exposing /sys/kernel/btf/vmlinux"
_HINT_LOOKUP = "this kernel's layout differs from what the probe expects; the probe cannot run on it"


def _err(message: str, hint: str = _HINT_LOOKUP) -> CapabilityError:
    return CapabilityError(message, hint=hint)


@dataclass
class Btf:
    """One parsed BTF blob: ``w`` is the type section as u32 words, ``start[id]`` the word index of a type."""

    w: memoryview
    strs: bytes
    start: list[int]
    by_name: dict[int, list[int]]  # name_off -> ids of named STRUCT/UNION/TYPEDEF records
    _ids: dict[str, list[int]] = field(default_factory=dict)

    def name(self, off: int) -> str:
        return self.strs[off : self.strs.index(b"\0", off)].decode()

    def _rec(self, tid: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, kflag, name_off, size_or_type) of type ``tid``."""
        i = self.start[tid]
        info = self.w[i + 1]
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, self.w[i], self.w[i + 2]

    def _named(self, name: str, kinds: tuple[int, ...]) -> int:
        ids = self._ids.get(name)
        if ids is None:  # the string table is searched, not decoded: names are only matched where asked for
            needle, ids = b"\0" + name.encode() + b"\0", []
            at = self.strs.find(needle)
            while at >= 0:
                ids += self.by_name.get(at + 1, ())
                at = self.strs.find(needle, at + 1)
            self._ids[name] = ids
        # a STRUCT/UNION with no members may be a stand-in for a duplicate: prefer one with members
        found = sorted((self._rec(t)[1] == 0, t) for t in ids if self._rec(t)[0] in kinds)
        if found:
            return found[0][1]
        raise _err(f"the running kernel's BTF has no {'/'.join(_KIND_NAMES[k] for k in kinds)} named {name!r}")

    def _strip(self, tid: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the type they name."""
        while tid and (r := self._rec(tid))[0] in _SKIP:
            tid = r[4]
        return tid

    def _member(self, struct: str, member: str) -> tuple[int, int]:
        """(bit offset, type id) of ``member``, looking through anonymous struct/union members."""
        sid = self._strip(self._named(struct, (STRUCT, UNION, TYPEDEF)))

        def walk(tid: int, base: int) -> tuple[int, int] | None:
            kind, vlen, kflag, _, _ = self._rec(tid)
            if kind not in (STRUCT, UNION):
                return None
            i = self.start[tid] + 3
            for k in range(i, i + 3 * vlen, 3):
                name_off, mtype, off = self.w[k], self.w[k + 1], self.w[k + 2]
                # kind_flag set: offset = bitfield_size << 24 | bit_offset; clear: offset is the bit offset
                bits, size = (off & 0xFFFFFF, off >> 24) if kflag else (off, 0)
                if name_off == 0:
                    found = walk(self._strip(mtype), base + bits)
                    if found:
                        return found
                elif self.strs.startswith(member.encode() + b"\0", name_off):
                    if size or (base + bits) % 8 or self._int_bitfield(mtype):
                        raise _err(f"{struct}.{member} is a bitfield; its byte offset means nothing to a probe")
                    return base + bits, mtype
            return None

        found = walk(sid, 0)
        if found is None:
            raise _err(f"struct {struct} of the running kernel has no member {member!r}")
        return found

    def _int_bitfield(self, tid: int) -> bool:
        """Without kind_flag a bitfield is an INT whose encoding has bits 0-7 (nr_bits) short of its size."""
        tid = self._strip(tid)
        kind, _, _, _, size = self._rec(tid)
        if kind != INT:
            return False
        enc = self.w[self.start[tid] + 3]
        return (enc & 0xFF) != size * 8 or (enc >> 16) & 0xFF != 0

    def member_offset(self, struct: str, member: str) -> int:
        """Byte offset of ``struct.member``, e.g. ``member_offset("sk_buff", "dev")``."""
        return self._member(struct, member)[0] // 8

    def member_size(self, struct: str, member: str) -> int:
        """Size in bytes of the member's type (pointers are 8), e.g. 16 for ``net_device.name``."""
        return self.size_of(self._member(struct, member)[1])

    def size_of(self, tid: int) -> int:
        tid = self._strip(tid)
        kind, _, _, _, size = self._rec(tid)
        if kind == PTR:
            return POINTER_SIZE
        if kind == ARRAY:
            i = self.start[tid] + 3  # btf_array {type, index_type, nelems}
            return self.w[i + 2] * self.size_of(self.w[i])
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            return size
        raise _err(f"type {self.type_name(tid)!r} of the running kernel's BTF has no size")

    def tracepoint_args(self, name: str) -> list[str]:
        """Argument types of raw tracepoint ``name``: element i is ``ctx->args[i]`` of a raw_tp program.

        The kernel declares ``typedef void (*btf_trace_<name>)(void *__data, TP_PROTO args...)``: a TYPEDEF
        to a PTR to a FUNC_PROTO whose first parameter is the tracepoint's private data, left out here.
        """
        tid = self._named(f"btf_trace_{name}", (TYPEDEF,))
        kind, _, _, _, target = self._rec(self._rec(tid)[4])
        proto = self._rec(target)
        if kind != PTR or proto[0] != FUNC_PROTO or proto[1] == 0:
            raise _err(f"btf_trace_{name} of the running kernel's BTF is not a pointer to a function prototype")
        i = self.start[target] + 3  # vlen x btf_param {name_off, type}
        return [self.type_name(self.w[k + 1]) for k in range(i + 2, i + 2 * proto[1], 2)]

    def type_name(self, tid: int) -> str:
        """C-like rendering: ``struct sk_buff *``, ``enum skb_drop_reason``, ``const char *``, ``u8[16]``."""
        if tid == 0:
            return "void"
        kind, vlen, kflag, name_off, ref = self._rec(tid)
        name = self.name(name_off) or "(anon)"
        if kind == PTR:
            inner = self.type_name(ref)
            return inner + ("*" if inner.endswith("*") else " *")
        if kind in (STRUCT, UNION, ENUM, ENUM64, FWD):
            tag = "union" if kind == UNION or (kind == FWD and kflag) else "struct"
            return f"{'enum' if kind in (ENUM, ENUM64) else tag} {name}"
        if kind in (CONST, VOLATILE, RESTRICT):
            return f"{_KIND_NAMES[kind]} {self.type_name(ref)}"
        if kind == TYPE_TAG:
            return self.type_name(ref)
        if kind == ARRAY:
            i = self.start[tid] + 3
            return f"{self.type_name(self.w[i])}[{self.w[i + 2]}]"
        if kind == FUNC_PROTO:
            i = self.start[tid] + 3
            args = ", ".join(self.type_name(self.w[k + 1]) for k in range(i, i + 2 * vlen, 2))
            return f"{self.type_name(ref)} (*)({args})"
        return name  # INT, FLOAT, TYPEDEF, FUNC, VAR, ...


def parse(data: bytes) -> Btf:
    """Index a BTF blob in one pass over the type records; names are decoded only when looked up."""
    if len(data) < 24 or int.from_bytes(data[:2], sys.byteorder) != MAGIC:
        raise _err("the BTF blob does not start with magic 0xeB9F in host byte order", _HINT_BLOB)
    hdr_len, type_off, type_len, str_off, str_len = (
        int.from_bytes(data[o : o + 4], sys.byteorder) for o in range(4, 24, 4)
    )
    t0, s0 = hdr_len + type_off, hdr_len + str_off
    if t0 % 4 or type_len % 4 or t0 + type_len > len(data) or s0 + str_len > len(data):
        raise _err("the BTF header's section offsets do not fit the blob", _HINT_BLOB)
    w = memoryview(data)[t0 : t0 + type_len].cast("I")
    start: list[int] = [0]  # id 0 is void
    by_name: dict[int, list[int]] = {}
    keep = (STRUCT, UNION, TYPEDEF)
    tail, n, i = _TAIL, len(w), 0
    while i + 3 <= n:
        info = w[i + 1]
        kind = (info >> 24) & 0x1F
        if kind in keep and w[i]:
            by_name.setdefault(w[i], []).append(len(start))
        start.append(i)
        try:
            fixed, per = tail[kind]
        except KeyError:
            raise _err(f"the BTF blob has type kind {kind}, unknown to vhtune's parser", _HINT_BLOB) from None
        i += 3 + fixed + per * (info & 0xFFFF)
    if i != n:
        raise _err("the BTF type section ends inside a type record", _HINT_BLOB)
    return Btf(w, data[s0 : s0 + str_len], start, by_name)


def load(path: Path = VMLINUX) -> Btf:
    """Read and index the kernel's BTF (``/sys/kernel/btf/vmlinux``)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _err(f"cannot read the kernel's BTF at {path}: {e.strerror or e}", _HINT_BLOB) from None
    return parse(data)
