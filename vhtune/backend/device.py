"""The vhost-user protocol state machine for a virtio-net device with N queue pairs.

Ordering rules enforced (vhost-user.rst): SET_OWNER comes before anything that touches memory or rings;
ring addresses need a memory table; a ring starts once it has a kick (fd or the no-fd bit) and — when
VHOST_USER_F_PROTOCOL_FEATURES is negotiated — SET_VRING_ENABLE 1; GET_VRING_BASE stops it and answers the
next avail index. Features cannot change while a ring runs. A new memory table while rings run is applied
by stopping those rings, remapping, re-translating their addresses and starting them again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Protocol

from vhtune.backend import messages as m
from vhtune.backend import net
from vhtune.backend.connection import close_fds
from vhtune.backend.memory import GuestMemory, parse_mem_table
from vhtune.backend.messages import Message, Reply, Req
from vhtune.backend.virtqueue import MAX_QUEUE_SIZE, Virtqueue
from vhtune.errors import ProtocolError

log = logging.getLogger("vhtune.backend")


def _offered_bits(msg: Message, offered: int) -> int:
    """The u64 of a SET_FEATURES / SET_PROTOCOL_FEATURES; a front-end may only acknowledge bits we offered."""
    (bits,) = m.U64.unpack(msg.payload)
    extra = bits & ~offered
    if extra:
        raise ProtocolError(f"bits {extra:#x} were not offered", msg.name, "features")
    return int(bits)


class RingHooks(Protocol):
    """What the daemon does when a ring starts or must stop (stop returns once no worker touches it)."""

    def start(self, vq: Virtqueue) -> None: ...

    def stop(self, vq: Virtqueue) -> None: ...


class NoHooks:
    def start(self, vq: Virtqueue) -> None:
        pass

    def stop(self, vq: Virtqueue) -> None:
        pass


def is_eventfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    except OSError:
        return False


def is_semaphore(fd: int) -> bool:
    """EFD_SEMAPHORE, as /proc/self/fdinfo shows it (Linux >= 6.3; older kernels do not say: False)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            return any(line.split(":")[0] == "eventfd-semaphore" and line.split(":")[1].strip() == "1" for line in f)
    except OSError:
        return False


class NetDevice:
    """State of one front-end connection. :meth:`handle` returns the reply bytes to send, if any."""

    def __init__(self, queue_pairs: int = 1, event_idx: bool = True, hooks: RingHooks | None = None) -> None:
        self.queue_pairs = queue_pairs
        self.offered = net.offered_features(event_idx)
        self.hooks: RingHooks = hooks or NoHooks()
        self.vqs = [Virtqueue(i) for i in range(2 * queue_pairs)]
        self.owner = False
        self.features: int | None = None
        self.protocol: int = 0
        self.protocol_set = False
        self.mem: GuestMemory | None = None
        self.running: set[int] = set()
        self.mtu: int | None = None
        self.status = 0

    # --- helpers ------------------------------------------------------------------------------------------
    def has(self, bit: int) -> bool:
        return bool(self.features is not None and self.features >> bit & 1)

    @property
    def proto_active(self) -> bool:
        """Protocol features are in use once the front-end sent SET_PROTOCOL_FEATURES (bit 30 was offered in
        GET_FEATURES) or acked bit 30 in SET_FEATURES. QEMU 7.2 sends SET_VRING_ENABLE before SET_FEATURES."""
        return self.protocol_set or self.has(net.VHOST_USER_F_PROTOCOL_FEATURES)

    def proto(self, bit: int) -> bool:
        return bool(self.protocol >> bit & 1)

    def _vq(self, msg: Message, index: int) -> Virtqueue:
        if index >= len(self.vqs):
            raise ProtocolError(f"queue {index} but the device has {len(self.vqs)}", msg.name, "index")
        return self.vqs[index]

    def _need_owner(self, msg: Message) -> None:
        if not self.owner:
            raise ProtocolError("sent before SET_OWNER", msg.name, "request")

    def _can_run(self, vq: Virtqueue) -> bool:
        started = vq.kick_fd is not None or vq.kick_polling
        enabled = vq.enabled or not self.proto_active
        return bool(started and enabled and vq.num and vq.addrs and self.mem is not None and not vq.broken)

    def _update(self, vq: Virtqueue) -> None:
        """Start or stop the ring so that ``running`` matches what the protocol state allows."""
        want = self._can_run(vq)
        if want and vq.index not in self.running:
            assert self.mem is not None
            vq.event_idx = self.has(net.VIRTIO_RING_F_EVENT_IDX)
            vq.indirect = self.has(net.VIRTIO_RING_F_INDIRECT_DESC)
            vq.attach(self.mem)
            self.running.add(vq.index)
            self.hooks.start(vq)
        elif not want and vq.index in self.running:
            self._stop(vq)

    def _stop(self, vq: Virtqueue) -> None:
        if vq.index in self.running:
            self.hooks.stop(vq)
            self.running.discard(vq.index)
        vq.detach()

    def _set_fd(self, vq: Virtqueue, attr: str, fd: int | None) -> None:
        with vq.call_lock:  # a running worker may be signalling through the old call fd
            old = getattr(vq, attr)
            setattr(vq, attr, fd)
            if old is not None and old != fd:
                with contextlib.suppress(OSError):
                    os.close(old)

    def close(self) -> None:
        """Connection gone: stop rings, unmap memory, close every fd we kept."""
        for vq in reversed(self.vqs):  # TX before RX: an echo TX worker feeds its RX ring
            self._stop(vq)
            for attr in ("kick_fd", "call_fd", "err_fd"):
                self._set_fd(vq, attr, None)
        if self.mem is not None:
            self.mem.close()
            self.mem = None

    # --- dispatch -----------------------------------------------------------------------------------------
    def handle(self, msg: Message) -> bytes | None:
        """Apply one request. Owns msg.fds: each is kept by the device or closed, also on error."""
        try:
            spec = m.validate(msg)
            payload = getattr(self, "_h_" + Req(msg.request).name.lower())(msg)
        except ProtocolError as e:
            close_fds(msg.fds)
            msg.fds = []
            ackable = m.SPECS.get(Req(msg.request)) if msg.request in Req._value2member_map_ else None
            if msg.need_reply and self.proto(net.PROTO_REPLY_ACK) and (ackable is None or ackable.reply is Reply.NONE):
                log.error("vhost-user: %s (nacked)", str(e))
                return m.encode_reply(msg.request, m.U64.pack(1))
            raise
        if spec.reply is Reply.ALWAYS:
            return m.encode_reply(msg.request, payload or b"")
        if msg.need_reply and self.proto(net.PROTO_REPLY_ACK):
            return m.encode_reply(msg.request, m.U64.pack(0))
        return None

    # --- handlers (return the reply payload for GET_*) ----------------------------------------------------
    def _h_get_features(self, msg: Message) -> bytes:
        return m.U64.pack(self.offered)

    def _h_set_features(self, msg: Message) -> None:
        f = _offered_bits(msg, self.offered)
        if self.running and f != self.features:
            # QEMU's vhost-user net sends SET_FEATURES once per queue pair (one vhost_dev each), so pairs
            # after the first repeat it while pair 0 runs: the same value is a no-op, a change is refused.
            raise ProtocolError("features cannot change while rings run", msg.name, "features")
        self.features = f

    def _h_set_owner(self, msg: Message) -> None:
        self.owner = True

    def _h_reset_owner(self, msg: Message) -> None:
        self.close()
        self.owner = False
        self.features = None

    def _h_get_protocol_features(self, msg: Message) -> bytes:
        return m.U64.pack(net.OFFERED_PROTOCOL)

    def _h_set_protocol_features(self, msg: Message) -> None:
        self.protocol = _offered_bits(msg, net.OFFERED_PROTOCOL)
        self.protocol_set = True

    def _h_get_queue_num(self, msg: Message) -> bytes:
        return m.U64.pack(self.queue_pairs)

    def _h_set_mem_table(self, msg: Message) -> None:
        self._need_owner(msg)
        descs = parse_mem_table(msg.payload, len(msg.fds))
        try:
            new = GuestMemory.map(descs, msg.fds)
        finally:
            close_fds(msg.fds)
            msg.fds = []
        # Stop TX before RX of each pair (descending index): an echo TX worker feeds its RX ring.
        was_running = [self.vqs[i] for i in sorted(self.running, reverse=True)]
        for vq in was_running:
            self._stop(vq)
        was_running.reverse()
        if self.mem is not None:
            self.mem.close()
        self.mem = new
        for vq in was_running:
            try:
                self._update(vq)
            except ProtocolError as e:
                vq.broken = str(e)
                log.error("vhost-user: %s: ring stays stopped after the new memory table", str(e))

    def _h_set_log_base(self, msg: Message) -> None:
        raise ProtocolError("dirty logging (LOG_SHMFD) was not offered", msg.name, "request")

    def _h_set_log_fd(self, msg: Message) -> None:
        raise ProtocolError("dirty logging (LOG_SHMFD) was not offered", msg.name, "request")

    def _state(self, msg: Message) -> tuple[Virtqueue, int]:
        self._need_owner(msg)
        index, num = m.VRING_STATE.unpack(msg.payload)
        return self._vq(msg, index), num

    def _h_set_vring_num(self, msg: Message) -> None:
        vq, num = self._state(msg)
        if num == 0 or num > MAX_QUEUE_SIZE or num & (num - 1):
            raise ProtocolError(f"{num} is not a power of two in 1..{MAX_QUEUE_SIZE}", msg.name, "num")
        if vq.index in self.running:
            raise ProtocolError("ring size cannot change while the ring runs", msg.name, "num")
        vq.num = num

    def _h_set_vring_base(self, msg: Message) -> None:
        vq, num = self._state(msg)
        if num > 0xFFFF:
            raise ProtocolError(f"base {num} does not fit a split ring's u16 index", msg.name, "num")
        if vq.index in self.running:
            raise ProtocolError("base cannot change while the ring runs", msg.name, "num")
        vq.last_avail = vq.used_idx = num
        vq.broken = None

    def _h_get_vring_base(self, msg: Message) -> bytes:
        vq, _ = self._state(msg)
        self._stop(vq)
        self._set_fd(vq, "kick_fd", None)
        vq.kick_polling = False
        vq.enabled = False
        return m.VRING_STATE.pack(vq.index, vq.last_avail)

    def _h_set_vring_addr(self, msg: Message) -> None:
        self._need_owner(msg)
        index, _flags, desc, used, avail, _log = m.VRING_ADDR.unpack(msg.payload)
        vq = self._vq(msg, index)
        if self.mem is None:
            raise ProtocolError("ring addresses sent before SET_MEM_TABLE", msg.name, "desc")
        if not vq.num:
            raise ProtocolError("ring addresses sent before SET_VRING_NUM", msg.name, "index")
        if vq.index in self.running:
            self._stop(vq)
        old = vq.addrs
        vq.addrs = (desc, avail, used)
        try:
            vq.attach(self.mem)  # validates translation and alignment now
        except ProtocolError:
            vq.addrs = old
            raise
        finally:
            vq.detach()
        self._update(vq)

    def _vring_fd(self, msg: Message, attr: str) -> None:
        self._need_owner(msg)
        (val,) = m.U64.unpack(msg.payload)
        if val & ~(m.VRING_IDX_MASK | m.VRING_NOFD_MASK):
            raise ProtocolError(f"reserved bits set in {val:#x}", msg.name, "index")
        vq = self._vq(msg, val & m.VRING_IDX_MASK)
        fd: int | None = None
        if msg.fds:
            fd = msg.fds.pop()
            if not is_eventfd(fd):
                os.close(fd)
                raise ProtocolError("the fd is not an eventfd", msg.name, "fd")
            if attr == "kick_fd" and is_semaphore(fd):
                # Each read takes 1 from the counter: a large count would wake the worker without end.
                os.close(fd)
                raise ProtocolError("the kick eventfd is in EFD_SEMAPHORE mode", msg.name, "fd")
            # Never block on the front-end's counter: a blocking eventfd whose counter the front-end parks at
            # its maximum (write) or drains itself (read) would hang the worker, and through call_lock the
            # connection thread. O_NONBLOCK is shared with the front-end's copy; QEMU and DPDK create these
            # eventfds EFD_NONBLOCK anyway, so for them nothing changes.
            os.set_blocking(fd, False)
        if attr == "kick_fd":
            self._stop(vq)
            vq.kick_polling = fd is None
        self._set_fd(vq, attr, fd)
        if attr == "kick_fd":
            self._update(vq)

    def _h_set_vring_kick(self, msg: Message) -> None:
        self._vring_fd(msg, "kick_fd")

    def _h_set_vring_call(self, msg: Message) -> None:
        self._vring_fd(msg, "call_fd")

    def _h_set_vring_err(self, msg: Message) -> None:
        self._vring_fd(msg, "err_fd")

    def _h_set_vring_enable(self, msg: Message) -> None:
        vq, num = self._state(msg)
        if not self.proto_active:
            raise ProtocolError("needs VHOST_USER_F_PROTOCOL_FEATURES negotiated", msg.name, "request")
        if num > 1:
            raise ProtocolError(f"enable must be 0 or 1, got {num}", msg.name, "num")
        vq.enabled = bool(num)
        self._update(vq)

    def _h_send_rarp(self, msg: Message) -> None:
        raise ProtocolError("RARP was not offered", msg.name, "request")

    def _h_net_set_mtu(self, msg: Message) -> None:
        if not self.proto(net.PROTO_MTU):
            raise ProtocolError("MTU protocol feature not negotiated", msg.name, "request")
        (mtu,) = m.U64.unpack(msg.payload)
        if not 68 <= mtu <= 65535:
            raise ProtocolError(f"MTU {mtu} outside 68..65535", msg.name, "mtu")
        self.mtu = mtu

    def _h_set_status(self, msg: Message) -> None:
        if not self.proto(net.PROTO_STATUS):
            raise ProtocolError("STATUS protocol feature not negotiated", msg.name, "request")
        (st,) = m.U64.unpack(msg.payload)
        if st > 0xFF:
            raise ProtocolError(f"status {st:#x} is wider than the 8-bit device status", msg.name, "status")
        self.status = st

    def _h_get_status(self, msg: Message) -> bytes:
        if not self.proto(net.PROTO_STATUS):
            raise ProtocolError("STATUS protocol feature not negotiated", msg.name, "request")
        return m.U64.pack(self.status)
