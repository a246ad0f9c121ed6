"""Which net variant this kernel can run, and the struct offsets the counters variant is compiled with.

The counters variant (probes/net_counters.bpf.c) reads skb->dev, skb->skb_iif, dev->name, dev->ifindex and
(on a per-device cache miss) dev->nd_net.net->ns.inum in a raw tracepoint on kfree_skb. Those offsets must be
the running kernel's: they come from its BTF (/sys/kernel/btf/vmlinux), never from the installed headers (6.1
headers on this 6.18 host). Without BTF, or when a member moved into a bitfield or changed size, the recorder
falls back to the tracepoint variant (probes/net.bpf.c), which reads only tracepoint fields, and says why in
the manifest.
"""

from __future__ import annotations

from vhtune.errors import CapabilityError
from vhtune.probes import btf

# -D name → (struct, member, expected size in bytes)
MEMBERS = {
    "VHT_SKB_DEV_OFF": ("sk_buff", "dev", 8),
    "VHT_SKB_IIF_OFF": ("sk_buff", "skb_iif", 4),
    "VHT_DEV_NAME_OFF": ("net_device", "name", 16),
    "VHT_DEV_IFINDEX_OFF": ("net_device", "ifindex", 4),
}
# -D name → the member chain whose offsets add up (struct, member, expected size of that member)
NETNS_PATHS: dict[str, tuple[tuple[str, str, int | None], ...]] = {
    "VHT_DEV_NET_OFF": (("net_device", "nd_net", 8), ("possible_net_t", "net", 8)),
    "VHT_NET_INUM_OFF": (("net", "ns", None), ("ns_common", "inum", 4)),
}
REASON_TYPE = "enum skb_drop_reason"


def counters_offsets() -> dict[str, int]:
    """The -D values for probes/net_counters.bpf.c, or CapabilityError saying why this kernel cannot run it."""
    b = btf.load()
    out: dict[str, int] = {}
    for flag, (struct, member, size) in MEMBERS.items():
        got = b.member_size(struct, member)
        if got != size:
            raise CapabilityError(f"{struct}.{member} is {got} bytes in this kernel's BTF, not {size}")
        out[flag] = b.member_offset(struct, member)
    # The device's netns inode, read on a dev_cache miss only: dev->nd_net.net (possible_net_t wraps the
    # pointer) → net->ns.inum (struct ns_common).
    for flag, path in NETNS_PATHS.items():
        off = 0
        for struct, member, want in path:
            got = b.member_size(struct, member)
            if want is not None and got != want:
                raise CapabilityError(f"{struct}.{member} is {got} bytes in this kernel's BTF, not {want}")
            off += b.member_offset(struct, member)
        out[flag] = off
    args = b.tracepoint_args("kfree_skb")
    if not args or "sk_buff" not in args[0] or REASON_TYPE not in args:
        raise CapabilityError(
            f"kfree_skb's raw tracepoint arguments are {args}, not (struct sk_buff *, …, {REASON_TYPE})"
        )
    out["VHT_KFREE_REASON_ARG"] = args.index(REASON_TYPE)
    return out
