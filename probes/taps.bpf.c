/* The watched taps and their drops, for both net variants (net.bpf.c, net_counters.bpf.c): `taps` holds
 * every watched (name, netns inode) (the truth), `tap_dir` the same direct-mapped by a multiplicative hash of
 * the name's two NUL-padded little-endian words, so a hit costs an inlined array read instead of a ~50 ns hash
 * lookup on the 24-byte key. Two watched taps in one entry (colliding names, or one name in several netns)
 * mark it VHT_TAP_SHARED: then the hash answers. The tracepoint variant passes inum 0 (it has no netns). */

BPF_HASH(taps, struct vht_tap_key, u32, VHT_MAX_TAPS); /* (name, netns inode) → tap slot: every watched tap */
BPF_ARRAY(tap_dir, struct vht_tap_ent, VHT_TAP_DIR);    /* the same, direct-mapped by the name's hash */
BPF_HASH(drops, struct vht_drop_key, u64, VHT_HASH_ENTRIES); /* (slot, direction, reason) → kfree_skb count */

/* The watched-tap slot of `ifn` (a name already NUL-padded to 16 bytes) in netns `inum`, or VHT_NOSLOT. */
static __always_inline u32 vht_tap_lookup(struct vht_ifname *ifn, u32 inum)
{
    u64 *w = (u64 *)ifn->name;
    u32 idx = (u32)(((w[0] ^ (w[1] * VHT_TAP_K1)) * VHT_TAP_K2) >> (64 - VHT_TAP_DIR_BITS));
    struct vht_tap_ent *e = tap_dir.lookup(&idx);
    if (!e || !e->flags)
        return VHT_NOSLOT;
    if (!(e->flags & VHT_TAP_SHARED))
        return (e->n0 == w[0] && e->n1 == w[1] && e->inum == inum) ? e->slot : VHT_NOSLOT;
    struct vht_tap_key key = {.inum = inum};
    __builtin_memcpy(key.name, ifn->name, sizeof(key.name));
    u32 *slot = taps.lookup(&key);
    return slot ? *slot : VHT_NOSLOT;
}

/* Count one kfree_skb against (tap slot, direction, reason); a full map is counted as lost. */
static __always_inline void vht_count_drop(struct vht_drop_key *key)
{
    u64 *n = drops.lookup(key);
    if (!n) {
        u64 zero = 0;
        if (drops.update(key, &zero) != 0)
            vht_lose(VHT_LOST_DROP);
        n = drops.lookup(key);
    }
    if (n)
        __sync_fetch_and_add(n, 1);
}
