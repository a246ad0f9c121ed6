/* net family: packets/bytes per target tap and kfree_skb drops attributed to it. The net tracepoints carry
 * the device only as `name` (__data_loc string), so taps are matched by name (a netns-blind key: lab taps
 * carry the pid in their names; user space watches one tap per name here and says so in the manifest when
 * two watched taps of different netns share one). skb:kfree_skb has no device at all: the skb address seen at
 * net_dev_queue / netif_receive_skb on a target tap is remembered in a direct-mapped cache and looked up
 * at kfree_skb; consume_skb forgets it so a recycled address is not blamed on the tap.
 *
 * Cost of a hit (bpf_stats, this host): the name read is one bpf_probe_read_kernel of 16 bytes (~40 ns; a
 * tracepoint program may not load ctx bytes past the fixed fields — perf_event_set_bpf_prog refuses it with
 * EACCES — so the __data_loc string cannot be read in place), then the tap_dir entry (taps.bpf.c). */

/* enum skb_drop_reason only types the 4-byte `reason` field; its values come from the running kernel. */
#include <net/dropreason.h>

BPF_ARRAY(ifname_len_filter, u32, VHT_IFNAME_LEN_SLOTS); /* name length incl. NUL → taps of that length */
BPF_PERCPU_ARRAY(tap_stats, struct vht_tap_stats, VHT_MAX_TAPS);
BPF_ARRAY(skb_owner, struct vht_skb_owner, VHT_SKB_TRACK);

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

/* The watched-tap slot of the device named by a net tracepoint's __data_loc `name`, or VHT_NOSLOT. */
static __always_inline u32 vht_tap_slot(void *args, u32 data_loc)
{
    u32 len = data_loc >> 16; /* __data_loc: length (with the NUL) in the high 16 bits, offset in the low */
    u32 *nlen = ifname_len_filter.lookup(&len);
    if (!nlen || !*nlen || len < 2 || len > 16)
        return VHT_NOSLOT;
    struct vht_ifname ifn;
    if (bpf_probe_read_kernel(&ifn, sizeof(ifn), (char *)args + (data_loc & 0xffff)) != 0)
        return VHT_NOSLOT;
    /* Keep the len - 1 name bytes, zero the rest (the NUL and whatever follows the record): the key is the
     * NUL-padded name. The words are little-endian: byte 0 of the name is the low byte of w[0]. */
    u64 *w = (u64 *)ifn.name;
    u32 nb = len - 1;
    if (nb < 8) {
        w[0] &= (1ULL << (nb * 8)) - 1;
        w[1] = 0;
    } else if (nb > 8) {
        w[1] &= (1ULL << ((nb - 8) * 8)) - 1;
    } else {
        w[1] = 0;
    }
    return vht_tap_lookup(&ifn, 0); /* by name only: the tracepoints carry no netns */
}

TRACEPOINT_PROBE(net, netif_receive_skb)
{
    u32 s = vht_tap_slot(args, args->data_loc_name);
    struct vht_tap_stats *st = tap_stats.lookup(&s);
    if (!st)
        return 0; /* VHT_NOSLOT is out of the array's range */
    st->rx_packets++;
    st->rx_bytes += args->len;
    vht_own_skb((u64)args->skbaddr, s, VHT_DIR_RX);
    return 0;
}

TRACEPOINT_PROBE(net, net_dev_queue)
{
    u32 s = vht_tap_slot(args, args->data_loc_name);
    struct vht_tap_stats *st = tap_stats.lookup(&s);
    if (!st)
        return 0;
    st->tx_queued++;
    vht_own_skb((u64)args->skbaddr, s, VHT_DIR_TX);
    return 0;
}

TRACEPOINT_PROBE(net, net_dev_xmit)
{
    u32 s = vht_tap_slot(args, args->data_loc_name);
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
    vht_count_drop(&key);
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
