"""Moving packets between a virtqueue and a port: TX (driver → device) and RX (device → driver).

Fast paths work on a whole burst with numpy when every chain is one plain descriptor in one region (what
DPDK virtio-user and Linux post for small frames); anything else goes through the per-chain walker, which
checks each descriptor. A bad chain is returned to the driver with len 0 and counted as a drop by reason.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vhtune.backend import net
from vhtune.backend.stats import QueueStats, Tunables
from vhtune.backend.virtqueue import DESC, F_WRITE, Seg, Virtqueue
from vhtune.errors import ProtocolError

log = logging.getLogger("vhtune.backend")
_OR, _ADD = np.bitwise_or.reduce, np.add.reduce
SMALL_BURST = 4  # at or below this many descriptors plain Python beats numpy's per-call overhead


@dataclass
class PortIO:
    """The port side of one queue pair: a tap queue fd, or nothing (sink/echo/gen)."""

    kind: str
    fd: int | None = None
    frame: bytes = b""  # gen template


class _RateLog:
    """At most one log line per reason per second: a hostile driver must not flood the log. Resource
    conditions (a guest that does not refill, a full tap) are warnings; malformed guest data is an error."""

    WARN = frozenset({"no_rx_buffer", "tap_full", "no_rx_ring"})

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def __call__(self, reason: str, err: str) -> None:
        now = time.monotonic()
        if now - self.last.get(reason, 0.0) >= 1.0:
            self.last[reason] = now
            level = logging.WARNING if reason in self.WARN else logging.ERROR
            log.log(level, "vhost-user data path: %s (%s)", err, reason)


class QueuePath:
    """State shared by the worker of one virtqueue and (for RX) the TX worker that feeds it (echo)."""

    def __init__(self, vq: Virtqueue, stats: QueueStats, tun: Tunables, io: PortIO, hdr_len: int, mrg: bool):
        self.vq = vq
        self.stats = stats
        self.tun = tun
        self.io = io
        self.hdr_len = hdr_len
        self.mrg = mrg
        self.mtu: int | None = None
        self.lock = threading.Lock()
        self.peer: QueuePath | None = None  # the RX path of the same pair (echo)
        self.running = True
        self.pending_calls = 0
        self.bursts_since_call = 0
        # gen: the avail index up to which the pending buffers proved unusable (too small, or too few for one
        # frame) and were left in place; the worker sleeps until the driver adds past it. None: no such stall.
        self.stalled_at: int | None = None
        self.rate_log = _RateLog()
        self._gen_cache: bytes | None = None
        self._gen_tpl = np.empty(0, dtype=np.uint8)
        self._rows_key: tuple[int, int] | None = None
        self._rows_view = np.empty((0, 0), dtype=np.uint8)

    # --- notifications ------------------------------------------------------------------------------------
    def after_push(self, old_used: int, force: bool = False) -> None:
        vq = self.vq
        if vq.used_idx == old_used and not self.pending_calls:
            return
        if vq.used_idx != old_used and vq.should_call(old_used, self.tun.suppression):
            self.pending_calls += 1
        self.bursts_since_call += 1
        if self.pending_calls and (force or self.bursts_since_call >= self.tun.call_coalesce):
            self.flush_calls()

    def flush_calls(self) -> None:
        if self.pending_calls:
            if self.vq.call():
                self.stats.calls += 1
            self.pending_calls = 0
        self.bursts_since_call = 0

    def drop(self, reason: str, err: object, n: int = 1) -> None:
        self.stats.drop(reason, n)
        # Log the text only: an exception object would pin its frames, and with them views of guest memory.
        self.rate_log(reason, str(err))

    def broken(self, err: ProtocolError) -> None:
        self.vq.broken = str(err)
        self.running = False
        log.error("vhost-user: %s: queue %d stopped", str(err), self.vq.index)

    def _pending(self) -> int | None:
        """Buffers the driver has made available and we have not taken; None once a bad avail.idx has
        stopped the queue (a driver never has more than the ring size outstanding, so a larger jump is
        corruption)."""
        try:
            return self.vq.pending()
        except ProtocolError as e:
            self.broken(e)
            return None

    # --- TX: driver → port --------------------------------------------------------------------------------
    def tx_step(self, burst: int) -> int:
        vq = self.vq
        n = min(self._pending() or 0, burst)
        if not n:
            return 0
        old = vq.used_idx
        heads = vq.pop(n)
        if not self._tx_fast(heads):
            self._tx_slow(heads)
        self.stats.burst(n)
        self.after_push(old)
        return n

    def _tx_fast(self, heads: np.ndarray) -> bool:
        """Whole-burst path: every chain one plain readable descriptor, all in one region. Small bursts are
        checked in plain Python (numpy's per-call cost dominates below a few descriptors), larger ones with
        numpy over the burst. False means nothing was done: the checked per-chain path takes the burst."""
        n = len(heads)
        got = self._check_small(heads) if n <= SMALL_BURST else self._check_burst(heads)
        if got is None:
            return False
        mv, offs, lens, total = got
        hl = self.hdr_len
        if mv is not None:
            if self.io.kind == "tap":
                self._tap_fast(mv, offs, lens)
            else:  # memoryview slices are ~3x cheaper than numpy slices per packet
                self._to_port([(mv[o + hl : o + ln],) for o, ln in zip(offs, lens, strict=True)])
        self.vq.push_zero(heads)
        self.stats.packets += n
        self.stats.bytes += total - hl * n
        return True

    def _forwards(self) -> bool:
        # The sink (and gen's TX side) never looks at payload or header; other ports forward frames and
        # refuse offload requests (none are offered).
        return self.io.kind not in ("sink", "gen")

    def _check_burst(self, heads: np.ndarray) -> tuple[memoryview | None, list[int], list[int], int] | None:
        vq, mem, hl = self.vq, self.vq.mem, self.hdr_len
        assert mem is not None
        try:
            d = vq.desc[heads]  # one copy of the descriptors: everything below uses only it
        except IndexError:  # a head >= num: the walker reports it
            return None
        if _OR(d["flags"]):
            return None
        lens = d["len"]
        fwd = self._forwards()
        span = mem.span(d["addr"], lens, hl, self._max_frame() + hl, want_offsets=fwd)
        if span is None:
            return None
        total = int(_ADD(lens, dtype=np.int64))
        if not fwd:
            return None, [], [], total
        arr, offs = span
        if arr[offs].any() or arr[offs + 1].any():
            return None
        return arr.data, offs.tolist(), lens.tolist(), total

    def _check_small(self, heads: np.ndarray) -> tuple[memoryview | None, list[int], list[int], int] | None:
        vq, mem, hl = self.vq, self.vq.mem, self.hdr_len
        assert mem is not None
        num, limit, fwd = vq.num, self._max_frame() + hl, self._forwards()
        region = None
        offs: list[int] = []
        lens: list[int] = []
        for h in heads.tolist():
            if h >= num:
                return None
            addr, ln, flags, _nxt = DESC.unpack_from(vq.desc_mv, 16 * h)  # read once; only the copy is used
            if flags or ln < hl or ln > limit:
                return None
            try:
                r, off = mem.gpa(addr, ln)
            except ProtocolError:
                return None
            if region is None:
                region = r
            elif r is not region:
                return None
            if fwd and (r.arr[off] or r.arr[off + 1]):
                return None
            offs.append(off)
            lens.append(ln)
        if region is None:
            return None
        return (region.arr.data if fwd else None), offs, lens, sum(lens)

    def _max_frame(self) -> int:
        return net.MAX_CHAIN_BYTES - net.HDR_LEN if self.mtu is None else self.mtu + net.ETH_HLEN

    def _tx_slow(self, heads: np.ndarray) -> None:
        vq, hl = self.vq, self.hdr_len
        ids: list[int] = []
        frames: list[list[np.ndarray]] = []
        nbytes = 0
        for h in heads.tolist():
            ids.append(h)
            try:
                segs = vq.walk(h, writable=False, max_bytes=net.MAX_CHAIN_BYTES)
                total = sum(s.len for s in segs)
                where = f"{vq.name}.chain[{h}]"
                if total < hl:
                    raise ProtocolError(f"chain of {total} bytes is shorter than the header", where, "len")
                hdr, pieces = _split(segs, hl)
                if hl == net.HDR_LEN:
                    net.check_tx_header(hdr, total - hl, where)
                if total - hl > self._max_frame():
                    self.drop("too_big", f"{where}: {total - hl}-byte frame exceeds {self._max_frame()}")
                    continue
            except ProtocolError as e:
                self.drop("bad_descriptor" if e.field not in ("gso_type", "flags", "csum_start") else "bad_header", e)
                continue
            frames.append(pieces)
            nbytes += total - hl
        if self.io.kind not in ("sink", "gen") and frames:
            self._to_port([[p.data for p in f] for f in frames])
        vq.push(np.array(ids, dtype=np.uint32), np.zeros(len(ids), dtype=np.uint32))
        self.stats.packets += len(frames)
        self.stats.bytes += nbytes

    def _to_port(self, frames: Sequence[Sequence[memoryview]]) -> None:
        """Hand frames (each a list of guest-memory pieces, header excluded) to the port."""
        if self.io.kind == "echo":
            if self.peer is None:
                self.drop("no_rx_ring", "echo: the RX ring of this pair never started", len(frames))
                return
            self.peer.deliver([net.swap_macs(b"".join(f)) for f in frames])
        elif self.io.kind == "tap":
            self._tap_write(frames)

    def _tap_fast(self, mv: memoryview, offs: list[int], lens: list[int]) -> None:
        """One writev per frame (a tap takes one frame per write): our zero header + the payload in place."""
        fd, hl = self.io.fd, self.hdr_len
        assert fd is not None
        zero = bytes(hl)
        writev = os.writev
        i = 0
        try:
            for i, (o, ln) in enumerate(zip(offs, lens, strict=True)):  # noqa: B007 (i used after the loop)
                writev(fd, (zero, mv[o + hl : o + ln]))
        except BlockingIOError:
            self.drop("tap_full", f"tap queue full, {len(offs) - i} frames dropped", len(offs) - i)
            self.stats.packets -= len(offs) - i
        except OSError as e:
            self.drop("tap_error", f"tap write: {e.strerror}", len(offs) - i)
            self.stats.packets -= len(offs) - i

    def _tap_write(self, frames: Sequence[Sequence[memoryview]]) -> None:
        fd = self.io.fd
        assert fd is not None
        # Our own zero header: the guest's was validated from a copy and must not be re-read (TOCTOU).
        zero = bytes(self.hdr_len)
        writev = os.writev
        for i, f in enumerate(frames):
            try:
                writev(fd, (zero, *f))
            except BlockingIOError:
                self.drop("tap_full", f"tap queue full, {len(frames) - i} frames dropped", len(frames) - i)
                self.stats.packets -= len(frames) - i
                return
            except OSError as e:
                self.drop("tap_error", f"tap write: {e.strerror}")
                self.stats.packets -= 1

    # --- RX: port → driver --------------------------------------------------------------------------------
    def deliver(self, frames: Sequence[bytes]) -> int:
        """Copy frames into RX buffers (MRG_RXBUF: a frame may use several); returns frames delivered."""
        with self.lock:
            if not self.running or not self.vq.attached:
                self.drop("no_rx_ring", "RX ring not running", len(frames))
                return 0
            vq = self.vq
            avail = self._pending()
            if avail is None:
                return 0
            old = vq.used_idx
            if self._deliver_fast(frames, avail):
                self.after_push(old)
                return len(frames)
            ids: list[int] = []
            lens: list[int] = []
            done = nbytes = 0
            for f in frames:
                if len(f) > self._max_frame():
                    self.drop("too_big", f"{len(f)}-byte frame exceeds {self._max_frame()}")
                    continue
                used, got = self._place(f, avail, ids, lens)
                avail -= used
                if got:
                    done += 1
                    nbytes += len(f)
            vq.push(np.array(ids, dtype=np.uint32), np.array(lens, dtype=np.uint32))
            if done:
                self.stats.packets += done
                self.stats.bytes += nbytes
                self.stats.burst(done)
            self.after_push(old)
            return done

    def _deliver_fast(self, frames: Sequence[bytes], avail: int) -> bool:
        """Every frame into one plain writable buffer of one region: one slice store per frame instead of a
        chain walk. False (nothing touched) sends the burst down the checked per-chain path."""
        vq, mem, hl = self.vq, self.vq.mem, self.hdr_len
        n = len(frames)
        if not n or n > avail or mem is None:
            return False
        longest = max(len(f) for f in frames)
        if longest > self._max_frame():
            return False
        heads = vq.peek(n)
        try:
            d = vq.desc[heads]  # copied once
        except IndexError:
            return False
        if _OR(d["flags"] ^ F_WRITE):
            return False
        span = mem.span(d["addr"], d["len"], hl + longest, 1 << 31)
        if span is None:
            return False
        arr, offs = span
        mv = arr.data
        hdr = net.rx_header(1) if hl == net.HDR_LEN else bytes(hl)
        lens = np.empty(n, dtype=np.uint32)
        for k, (o, f) in enumerate(zip(offs.tolist(), frames, strict=True)):
            mv[o : o + hl] = hdr
            mv[o + hl : o + hl + len(f)] = f
            lens[k] = hl + len(f)
        vq.last_avail = (vq.last_avail + n) & 0xFFFF
        vq.push(heads, lens)
        self.stats.packets += n
        self.stats.bytes += int(_ADD(lens, dtype=np.int64)) - hl * n
        self.stats.burst(n)
        return True

    def _place(self, f: bytes, avail: int, ids: list[int], lens: list[int]) -> tuple[int, bool]:
        """Put one frame into the next buffers; returns (avail entries consumed, delivered)."""
        vq, hl = self.vq, self.hdr_len
        need = hl + len(f)
        bufs: list[tuple[int, list[Seg], int]] = []
        cap = taken = 0
        while cap < need:
            if taken == avail:
                self.drop("no_rx_buffer", f"{vq.name}: RX ring has no free buffer")
                return 0, False  # nothing committed: the peeked buffers stay available
            head = int(vq.avail_ring[(vq.last_avail + taken) & (vq.num - 1)])
            taken += 1
            try:
                segs = vq.walk(head, writable=True, max_bytes=1 << 31)
            except ProtocolError as e:
                # Give back everything peeked for this frame (len 0) so the bad buffer cannot block the ring.
                self.drop("bad_descriptor", e)
                for hd, _s, _c in bufs:
                    ids.append(hd)
                    lens.append(0)
                ids.append(head)
                lens.append(0)
                vq.last_avail = (vq.last_avail + taken) & 0xFFFF
                return taken, False
            c = sum(s.len for s in segs)
            bufs.append((head, segs, c))
            cap += c
            if not self.mrg and cap < need:
                self.drop("too_big", f"{vq.name}: {need}-byte packet, buffer holds {c} and no MRG_RXBUF")
                return 0, False
        data = (net.rx_header(len(bufs)) if hl == net.HDR_LEN else bytes(hl)) + f
        self._commit(bufs, taken, data, ids, lens)
        return taken, True

    def _commit(
        self, bufs: list[tuple[int, list[Seg], int]], taken: int, data: bytes, ids: list[int], lens: list[int]
    ) -> None:
        src = np.frombuffer(data, dtype=np.uint8)
        pos = 0
        for head, segs, _c in bufs:
            start = pos
            for s in segs:
                k = min(s.len, len(src) - pos)
                if k <= 0:
                    break
                s.region.arr[s.off : s.off + k] = src[pos : pos + k]
                pos += k
            ids.append(head)
            lens.append(pos - start)
        self.vq.last_avail = (self.vq.last_avail + taken) & 0xFFFF

    @property
    def _gen_data(self) -> bytes:
        if self._gen_cache is None:
            hdr = net.rx_header(1) if self.hdr_len == net.HDR_LEN else bytes(self.hdr_len)
            self._gen_cache = hdr + self.io.frame
            self._gen_tpl = np.frombuffer(self._gen_cache, dtype=np.uint8)
        return self._gen_cache

    def release(self) -> None:
        """Drop cached views of guest memory (the ring stopped; its memory may be unmapped next)."""
        self._rows_key = None
        self._rows_view = np.empty((0, 0), dtype=np.uint8)

    def _rows(self, arr: np.ndarray, ln: int) -> np.ndarray:
        """An overlapping (len - ln + 1, ln) byte-stride view of a region, cached per region: a fancy row
        select on it copies whole rows, ~8x faster than an element-wise scatter."""
        key = (id(arr), ln)
        if self._rows_key != key:
            self._rows_view = np.lib.stride_tricks.as_strided(
                arr, shape=(len(arr) - ln + 1, ln), strides=(1, 1), writeable=True
            )
            self._rows_key = key
        return self._rows_view

    def seen_avail(self) -> int:
        """The avail index up to which every buffer has been dealt with (taken, or found unusable by gen)."""
        return self.vq.last_avail if self.stalled_at is None else self.stalled_at

    def gen_step(self, burst: int) -> int:
        """Fill up to ``burst`` RX buffers with the template frame (vectorized when buffers are plain)."""
        with self.lock:
            vq, mem = self.vq, self.vq.mem
            assert mem is not None
            self.stalled_at = None
            pending = self._pending() or 0
            n = min(pending, burst)
            if not n:
                return 0
            data = self._gen_data
            heads = vq.peek(n)
            try:
                d = vq.desc[heads]  # copied once
            except IndexError:
                d = None
            if d is not None and not _OR(d["flags"] ^ F_WRITE):
                span = mem.span(d["addr"], d["len"], len(data), 1 << 31)
                if span is not None:
                    arr, offs = span
                    self._rows(arr, len(data))[offs] = self._gen_tpl
                    old = vq.used_idx
                    vq.last_avail = (vq.last_avail + n) & 0xFFFF
                    vq.push_const(heads, len(data))
                    self.stats.packets += n
                    self.stats.bytes += n * len(self.io.frame)
                    self.stats.burst(n)
                    self.after_push(old)
                    return n
            first = vq.last_avail
        done = self.deliver([self.io.frame] * n)
        if not done and vq.last_avail == first:
            # Nothing filled and nothing returned: these buffers stay unusable until the driver adds more.
            self.stalled_at = (first + pending) & 0xFFFF
        return done

    def tap_rx_step(self, burst: int) -> int:
        """Read up to ``burst`` frames from the tap queue into RX buffers."""
        fd = self.io.fd
        assert fd is not None
        room = self._pending()
        if room is None:
            return 0
        if not room and self.tun.rx_refill == "wait":
            return 0
        frames: list[bytes] = []
        # Never read more frames than the ring has free heads for (each frame takes at least one): what is not
        # read stays in tun's queue instead of being read only to be dropped as no_rx_buffer.
        for _ in range(min(burst, room) if room else 1):
            try:
                b = os.read(fd, net.MAX_CHAIN_BYTES)
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    self.drop("tap_error", f"tap read: {e.strerror}")
                break
            frames.append(b[self.hdr_len :])
        if frames:
            self.deliver(frames)
        return len(frames)


def _split(segs: list[Seg], hl: int) -> tuple[bytes, list[np.ndarray]]:
    """Header bytes (copied, may span descriptors) and views of the payload after it."""
    hdr = b""
    pieces: list[np.ndarray] = []
    for s in segs:
        v = s.view()
        if len(hdr) < hl:
            take = hl - len(hdr)
            hdr += v[:take].tobytes()
            v = v[take:]
        if len(v):
            pieces.append(v)
    return hdr, pieces
