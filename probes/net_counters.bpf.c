/* net family, counters variant: no program runs for a packet that is not dropped. Packets and bytes per tap
 * come from the device's own counters, read by user space once per interval (vhtune/probes/netdev.py); this
 * file only attributes kfree_skb drops to watched taps.
 *
 * A raw tracepoint gets kfree_skb's TP_PROTO arguments themselves (no perf record is built, unlike the
 * tracepoint the other variant uses): ctx->args[0] is the skb, ctx->args[VHT_KFREE_REASON_ARG] the enum
 * skb_drop_reason. The device is skb->dev, its name net_device.name; whether the skb came in through it is
 * skb->skb_iif == dev->ifindex (__netif_receive_skb_core sets skb_iif; a locally sent or forwarded skb has 0 or
 * another device's index there). The offsets come from the running kernel's BTF (vhtune/probes/btf.py) as -D
 * flags: this host's 6.1 headers do not match its 6.18 kernel.
 *
 * A tap is (name, netns inode): one netns per VM (Kata Containers) gives several taps of one name, and each
 * must get only its own drops. Each bpf_probe_read_kernel costs ~15-20 ns here, so a device is looked up once:
 * on a dev_cache miss its name (16 bytes) and its netns inode (dev->nd_net.net, then net->ns.inum) are read and
 * matched; dev_cache remembers, per net_device address, its ifindex and tap slot (or VHT_NOSLOT), valid while
 * the address, the ifindex and tap_gen (bumped by user space whenever the watched taps change) are unchanged.
 * A drop on a cached device then costs three small reads (skb->dev, dev->ifindex, skb->skb_iif) whatever the
 * miss path reads. A device moved to another netns keeps its address and usually its ifindex: its entry is
 * refilled when discovery sees the move (the tap's key changes, tap_gen is bumped). The ifindex check catches
 * a device freed and another allocated at the same address (indexes are handed out cyclically per netns); two
 * CPUs filling one entry at once may tear it, which can misattribute a drop until the next fill. */

BPF_ARRAY(tap_gen, u32, 1);                             /* bumped by user space when the watched taps change */
BPF_ARRAY(dev_cache, struct vht_dev_ent, VHT_DEV_CACHE);

/* Keep the bytes of w before its first NUL (all of w when it has none); *ended says whether one was found.
 * (w - 0x01..) & ~w & 0x80.. has the top bit set in every zero byte at or after the first; its lowest set bit
 * is exact, so (lowest >> 7) - 1 is the mask of the bytes before it. */
static __always_inline u64 vht_before_nul(u64 w, int *ended)
{
    u64 t = (w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL;
    if (!t)
        return w;
    *ended = 1;
    return w & (((t & -t) >> 7) - 1);
}

/* NUL-pad a name read from net_device.name (garbage may follow its NUL), then look (name, netns) up. */
static __always_inline u32 vht_slot_by_name(struct vht_ifname *ifn, u32 inum)
{
    u64 *w = (u64 *)ifn->name;
    int ended = 0;
    w[0] = vht_before_nul(w[0], &ended);
    w[1] = ended ? 0 : vht_before_nul(w[1], &ended);
    return vht_tap_lookup(ifn, inum);
}

/* The inode of the device's network namespace: dev->nd_net.net->ns.inum (two reads; 0 when unreadable, which
 * matches no watched tap). */
static __always_inline u32 vht_dev_netns(void *dev)
{
    void *net = 0;
    u32 inum = 0;
    if (bpf_probe_read_kernel(&net, sizeof(net), dev + VHT_DEV_NET_OFF) != 0 || !net)
        return 0;
    bpf_probe_read_kernel(&inum, sizeof(inum), net + VHT_NET_INUM_OFF);
    return inum;
}

RAW_TRACEPOINT_PROBE(kfree_skb)
{
    void *skb = (void *)ctx->args[0];
    u32 reason = (u32)ctx->args[VHT_KFREE_REASON_ARG];
    void *dev = 0;
    if (bpf_probe_read_kernel(&dev, sizeof(dev), skb + VHT_SKB_DEV_OFF) != 0 || !dev)
        return 0;
    u32 zero = 0;
    u32 *gen = tap_gen.lookup(&zero);
    u32 ci = (u32)(((u64)dev * VHT_TAP_K2) >> (64 - VHT_DEV_CACHE_BITS));
    struct vht_dev_ent *e = dev_cache.lookup(&ci);
    s32 ifindex = 0;
    if (!gen || !e || bpf_probe_read_kernel(&ifindex, sizeof(ifindex), dev + VHT_DEV_IFINDEX_OFF) != 0)
        return 0;
    if (e->dev != (u64)dev || e->gen != *gen || e->ifindex != ifindex) {
        struct vht_ifname ifn;
        if (bpf_probe_read_kernel(&ifn, sizeof(ifn), dev + VHT_DEV_NAME_OFF) != 0)
            return 0;
        e->slot = vht_slot_by_name(&ifn, vht_dev_netns(dev));
        e->ifindex = ifindex;
        e->gen = *gen;
        e->dev = (u64)dev;
    }
    if (e->slot == VHT_NOSLOT)
        return 0;
    s32 iif = 0;
    bpf_probe_read_kernel(&iif, sizeof(iif), skb + VHT_SKB_IIF_OFF);
    struct vht_drop_key key = {.slot = e->slot, .dir = iif == e->ifindex ? VHT_DIR_RX : VHT_DIR_TX, .reason = reason};
    vht_count_drop(&key);
    return 0;
}
