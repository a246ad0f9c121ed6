/* net family: packets/bytes per target tap and kfree_skb drops attributed to it. The net tracepoints carry
 * the device only as `name` (__data_loc string), so taps are matched by name (a netns-blind key: lab taps
 * carry the pid in their names). skb:kfree_skb has no device at all: the skb address seen at
 * net_dev_queue / netif_receive_skb on a target tap is remembered in a direct-mapped cache and looked up
 * at kfree_skb; consume_skb forgets it so a recycled address is not blamed on the tap. */

/* enum skb_drop_reason only types the 4-byte `reason` field; its values come from the running kernel. */
#include <net/dropreason.h>

BPF_HASH(taps, struct vht_ifname, u32, VHT_MAX_TAPS); /* name → tap slot, written by user space */
BPF_ARRAY(ifname_len_filter, u32, VHT_IFNAME_LEN_SLOTS); /* name length incl. NUL → taps of that length */
BPF_PERCPU_ARRAY(tap_stats, struct vht_tap_stats, VHT_MAX_TAPS);
BPF_ARRAY(skb_owner, struct vht_skb_owner, VHT_SKB_TRACK);
BPF_HASH(drops, struct vht_drop_key, u64, VHT_HASH_ENTRIES);

/* sk_buff heads come from a slab of 256-byte objects: drop the low 8 bits before indexing. */
static __always_inline u32 vht_skb_idx(u64 skb)
{
    return (u32)(skb >> 8) & (VHT_SKB_TRACK - 1);
}

static __always_inline void vht_own_skb(u64 skb, u32 slot, u32 dir)
{
    u32 idx = vht_skb_idx(skb);
    struct vht_skb_owner *o = skb_owner.lookup(&idx);
    if (!o)
        return;
    if (o->skb && o->skb != skb)
        vht_lose(VHT_LOST_SKB);
    o->skb = skb;
    o->slot = slot;
    o->dir = dir;
}

TRACEPOINT_PROBE(net, netif_receive_skb)
{
    u32 len = args->data_loc_name >> 16; /* __data_loc: length in the high 16 bits */
    u32 *nlen = ifname_len_filter.lookup(&len);
    if (!nlen || !*nlen)
        return 0;
    struct vht_ifname ifn = {};
    TP_DATA_LOC_READ_STR(ifn.name, name, sizeof(ifn.name));
    u32 *slot = taps.lookup(&ifn);
    if (!slot)
        return 0;
    u32 s = *slot;
    struct vht_tap_stats *st = tap_stats.lookup(&s);
    if (!st)
        return 0;
    st->rx_packets++;
    st->rx_bytes += args->len;
    vht_own_skb((u64)args->skbaddr, s, VHT_DIR_RX);
    return 0;
}

TRACEPOINT_PROBE(net, net_dev_queue)
{
    u32 len = args->data_loc_name >> 16; /* __data_loc: length in the high 16 bits */
    u32 *nlen = ifname_len_filter.lookup(&len);
    if (!nlen || !*nlen)
        return 0;
    struct vht_ifname ifn = {};
    TP_DATA_LOC_READ_STR(ifn.name, name, sizeof(ifn.name));
    u32 *slot = taps.lookup(&ifn);
    if (!slot)
        return 0;
    u32 s = *slot;
    struct vht_tap_stats *st = tap_stats.lookup(&s);
    if (!st)
        return 0;
    st->tx_queued++;
    vht_own_skb((u64)args->skbaddr, s, VHT_DIR_TX);
    return 0;
}

TRACEPOINT_PROBE(net, net_dev_xmit)
{
    u32 len = args->data_loc_name >> 16; /* __data_loc: length in the high 16 bits */
    u32 *nlen = ifname_len_filter.lookup(&len);
    if (!nlen || !*nlen)
        return 0;
    struct vht_ifname ifn = {};
    TP_DATA_LOC_READ_STR(ifn.name, name, sizeof(ifn.name));
    u32 *slot = taps.lookup(&ifn);
    if (!slot)
        return 0;
    u32 s = *slot;
    struct vht_tap_stats *st = tap_stats.lookup(&s);
    if (!st)
        return 0;
    if (args->rc == 0) { /* NETDEV_TX_OK */
        st->tx_packets++;
        st->tx_bytes += args->len;
    } else {
        st->tx_errors++;
    }
    return 0;
}

TRACEPOINT_PROBE(skb, kfree_skb)
{
    u64 skb = (u64)args->skbaddr;
    u32 idx = vht_skb_idx(skb);
    struct vht_skb_owner *o = skb_owner.lookup(&idx);
    if (!o || o->skb != skb)
        return 0;
    struct vht_drop_key key = {.slot = o->slot, .dir = o->dir, .reason = args->reason};
    o->skb = 0;
    u64 *n = drops.lookup(&key);
    if (!n) {
        u64 zero = 0;
        if (drops.update(&key, &zero) != 0)
            vht_lose(VHT_LOST_DROP);
        n = drops.lookup(&key);
    }
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}

TRACEPOINT_PROBE(skb, consume_skb)
{
    u64 skb = (u64)args->skbaddr;
    u32 idx = vht_skb_idx(skb);
    struct vht_skb_owner *o = skb_owner.lookup(&idx);
    if (o && o->skb == skb)
        o->skb = 0;
    return 0;
}
