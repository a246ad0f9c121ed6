/* notify family: read()/write() on known eventfds, keyed by (tgid, fd) → fd slot from user space (roles
 * come from discovery / the back-end's control socket). A vhost-user back-end writes the call eventfd
 * (→ irqfd → guest interrupt) and reads the kick eventfd; a user-space front-end writes kicks. Only the
 * syscall entry is traced: the fd number is all we need, and the count of eventfd_write() calls is exact.
 *
 * sys_enter_write fires for every write() on the host, so the lookup is two inlined array reads for a
 * watched process's fd below VHT_FD_COLS (tgid_filter → its row, fd_direct[row][fd] → slot) and falls back
 * to the notify_fds hash only for larger fds or tgids sharing a filter entry. */

BPF_HASH(notify_fds, struct vht_fd_key, u32, VHT_MAX_FDS); /* (tgid, fd) → slot | flags: every watched fd */
BPF_ARRAY(fd_direct, u32, VHT_FD_ROWS * VHT_FD_COLS);   /* row * COLS + fd → slot | flags, 0 = not watched */
BPF_PERCPU_ARRAY(notify_stats, struct vht_notify_stats, VHT_MAX_FDS);
BPF_ARRAY(tgid_filter, struct vht_id_ent, VHT_FILTER_SIZE); /* tgid & VHT_FILTER_MASK → who is behind it */
BPF_PERCPU_ARRAY(pending, struct vht_pending, 1);

static __always_inline u32 vht_fd_value(u64 fd, u64 *pid_tgid)
{
    *pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = *pid_tgid >> 32;
    u32 k = tgid & VHT_FILTER_MASK;
    struct vht_id_ent *e = tgid_filter.lookup(&k);
    if (!e)
        return 0;
    if (e->id == tgid && e->val < VHT_FD_ROWS && fd < VHT_FD_COLS) {
        u32 i = e->val * VHT_FD_COLS + (u32)fd;
        u32 *v = fd_direct.lookup(&i);
        return v ? *v : 0;
    }
    /* Here: a large fd of the one watched tgid, a shared entry, or nobody (of ours) behind the entry. */
    if (e->id != tgid && e->val != VHT_ID_HASH)
        return 0;
    struct vht_fd_key key = {.tgid = tgid, .fd = (u32)fd};
    u32 *v = notify_fds.lookup(&key);
    return v ? *v : 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    u64 pid_tgid;
    u32 v = vht_fd_value(args->fd, &pid_tgid);
    if (!(v & VHT_FD_VALID))
        return 0;
    u32 s = v & VHT_FD_SLOT_MASK;
    struct vht_notify_stats *st = notify_stats.lookup(&s);
    if (st)
        st->writes++;
    if (!(v & VHT_FD_MAY_INJECT))
        return 0;
    u32 zero = 0;
    struct vht_pending *p = pending.lookup(&zero);
    if (p) {
        p->tid = (u32)pid_tgid;
        p->slot = s;
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
    u64 pid_tgid;
    u32 v = vht_fd_value(args->fd, &pid_tgid);
    if (!(v & VHT_FD_VALID))
        return 0;
    u32 s = v & VHT_FD_SLOT_MASK;
    struct vht_notify_stats *st = notify_stats.lookup(&s);
    if (st)
        st->reads++;
    return 0;
}
