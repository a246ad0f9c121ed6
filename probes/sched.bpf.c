/* sched family: per target thread on-CPU time, run-queue wait (wakeup or preemption → switch-in) as a log2
 * histogram, wake-ups, voluntary/involuntary switches, migrations, and the tasks that held a CPU while a
 * target waited there. Fields used: sched_switch prev_pid/prev_state/next_pid, sched_wakeup{,_new}
 * pid/target_cpu, sched_migrate_task pid/orig_cpu/dest_cpu. sched_switch runs in prev's context, so
 * bpf_get_current_pid_tgid()/comm describe prev. */

BPF_HASH(targets, u32, u32, VHT_MAX_THREADS); /* tid → thread slot, written by user space */
BPF_ARRAY(tid_filter, struct vht_id_ent, VHT_FILTER_SIZE); /* tid & VHT_FILTER_MASK → its slot, or ask */
BPF_PERCPU_ARRAY(thread_stats, struct vht_thread_stats, VHT_MAX_THREADS);
BPF_ARRAY(thread_ts, struct vht_thread_ts, VHT_MAX_THREADS);
BPF_PERCPU_ARRAY(runq_hist, struct vht_hist, VHT_MAX_THREADS);
BPF_ARRAY(cpu_wait, struct vht_cpu_wait, VHT_MAX_CPUS);
BPF_PERCPU_ARRAY(cpu_since, u64, 1); /* when the current task of this CPU was switched in */
BPF_HASH(competitors, struct vht_comp_key, struct vht_comp_val, VHT_HASH_ENTRIES);

/* A target's slot from the tid_filter entry alone (inlined array read); the `targets` hash only when two
 * watched tids share the entry. sched_switch asks this for prev and next on every switch of the host. */
static __always_inline u32 vht_thread_slot(u32 tid)
{
    u32 k = tid & VHT_FILTER_MASK;
    struct vht_id_ent *e = tid_filter.lookup(&k);
    if (!e || tid == 0) /* tid 0: the idle tasks, never a target (and the id of an empty entry) */
        return VHT_NOSLOT;
    if (e->id == tid && e->val < VHT_MAX_THREADS)
        return e->val;
    if (e->val != VHT_ID_HASH)
        return VHT_NOSLOT;
    u32 *slot = targets.lookup(&tid);
    return slot ? *slot : VHT_NOSLOT;
}

static __always_inline void vht_wait_enter(struct vht_thread_ts *ts, u32 cpu, u64 now)
{
    if (ts->wait_cpu >= 0)
        return;
    struct vht_cpu_wait *cw = cpu_wait.lookup(&cpu);
    if (!cw)
        return;
    /* Not atomic with the add below; a lost race only shifts wait_start by one event. */
    if (cw->waiters <= 0)
        cw->wait_start = now;
    __sync_fetch_and_add(&cw->waiters, 1);
    ts->wait_cpu = cpu;
}

static __always_inline void vht_wait_leave(struct vht_thread_ts *ts)
{
    if (ts->wait_cpu < 0)
        return;
    u32 cpu = ts->wait_cpu;
    struct vht_cpu_wait *cw = cpu_wait.lookup(&cpu);
    if (cw)
        __sync_fetch_and_add(&cw->waiters, -1);
    ts->wait_cpu = -1;
}

static __always_inline void vht_competitor(u32 cpu, u64 now, struct vht_cpu_wait *cw, u64 *since)
{
    u64 start = *since;
    if (cw->waiters > 0 && start) {
        if (cw->wait_start > start)
            start = cw->wait_start;
        u64 pid_tgid = bpf_get_current_pid_tgid();
        struct vht_comp_key key = {.tid = (u32)pid_tgid, .cpu = cpu};
        if (key.tid != 0 && now > start) {
            struct vht_comp_val *v = competitors.lookup(&key);
            if (!v) {
                struct vht_comp_val init = {.tgid = pid_tgid >> 32};
                bpf_get_current_comm(&init.comm, sizeof(init.comm));
                if (competitors.update(&key, &init) != 0)
                    vht_lose(VHT_LOST_COMPETITOR);
                v = competitors.lookup(&key);
            }
            if (v) {
                __sync_fetch_and_add(&v->ns, now - start);
                __sync_fetch_and_add(&v->slices, 1);
            }
        }
    }
    *since = now;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u32 cpu = bpf_get_smp_processor_id();
    u32 zero = 0;
    struct vht_cpu_wait *cw = cpu_wait.lookup(&cpu);
    u64 *since = cpu_since.lookup(&zero);
    u32 prev = args->prev_pid;
    u32 next = args->next_pid;
    u32 ps = vht_thread_slot(prev); /* slots by value: the verifier refuses OR-ing map pointers */
    u32 ns = vht_thread_slot(next);
    if (!cw || !since)
        return 0;
    /* Fast path, taken by almost every switch on a host: no target involved and none waiting here. The
     * clock read is skipped (bpf_ktime_get_ns adds ~60 ns per run here, bpf_stats). cpu_since goes stale,
     * which is harmless: a competitor's share starts at max(cpu_since, wait_start), and wait_start is
     * later than any switch that happened while nobody waited. */
    if (ps == VHT_NOSLOT && ns == VHT_NOSLOT && cw->waiters <= 0)
        return 0;
    u64 now = bpf_ktime_get_ns();
    vht_competitor(cpu, now, cw, since);

    if (ps != VHT_NOSLOT) {
        struct vht_thread_stats *st = thread_stats.lookup(&ps);
        struct vht_thread_ts *ts = thread_ts.lookup(&ps);
        if (st && ts) {
            if (ts->oncpu_since && now > ts->oncpu_since)
                st->oncpu_ns += now - ts->oncpu_since;
            ts->oncpu_since = 0;
            vht_wait_leave(ts); /* it was running, so any earlier wait is over */
            if ((args->prev_state & VHT_SLEEP_STATE_MASK) == 0) {
                st->invol_switches++; /* still runnable: preempted, it now waits on this CPU */
                ts->wait_since = now;
                vht_wait_enter(ts, cpu, now);
            } else {
                st->vol_switches++;
                ts->wait_since = 0;
            }
        }
    }

    if (ns != VHT_NOSLOT) {
        struct vht_thread_stats *st = thread_stats.lookup(&ns);
        struct vht_thread_ts *ts = thread_ts.lookup(&ns);
        if (st && ts) {
            ts->oncpu_since = now;
            if (ts->wait_since && now > ts->wait_since) {
                u64 delta = now - ts->wait_since;
                st->runq_ns += delta;
                st->runq_count++;
                u32 b = bpf_log2l(delta);
                if (b >= VHT_RUNQ_BUCKETS)
                    b = VHT_RUNQ_BUCKETS - 1;
                struct vht_hist *h = runq_hist.lookup(&ns);
                if (h && b < VHT_RUNQ_BUCKETS)
                    h->b[b]++;
            }
            ts->wait_since = 0;
            vht_wait_leave(ts);
        }
    }
    return 0;
}

static __always_inline void vht_on_wakeup(u32 tid, u32 target_cpu)
{
    u32 s = vht_thread_slot(tid);
    if (s == VHT_NOSLOT)
        return;
    struct vht_thread_stats *st = thread_stats.lookup(&s);
    struct vht_thread_ts *ts = thread_ts.lookup(&s);
    if (!st || !ts)
        return;
    st->wakeups++;
    if (!ts->wait_since) {
        u64 now = bpf_ktime_get_ns();
        ts->wait_since = now;
        vht_wait_enter(ts, target_cpu, now);
    }
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    vht_on_wakeup(args->pid, args->target_cpu);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    vht_on_wakeup(args->pid, args->target_cpu);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_migrate_task)
{
    u32 s = vht_thread_slot(args->pid);
    if (s == VHT_NOSLOT)
        return 0;
    struct vht_thread_stats *st = thread_stats.lookup(&s);
    struct vht_thread_ts *ts = thread_ts.lookup(&s);
    if (!st || !ts)
        return 0;
    st->migrations++;
    if (ts->wait_cpu >= 0) { /* a queued task moved: it now waits on dest_cpu */
        vht_wait_leave(ts);
        vht_wait_enter(ts, args->dest_cpu, ts->wait_since ? ts->wait_since : bpf_ktime_get_ns());
    }
    return 0;
}
