"""Changes that need the VM restarted: planned and printed as exact commands, never applied by vhtune.

Target ident {"vm": name-or-pid, "netdev": id}; value {"option": ..., "value": ...}. The options are QEMU's
virtio-net-pci properties (queues via the netdev's queues=N plus mq=on,vectors=2N+2; rx_queue_size and
tx_queue_size up to 1024) and the libvirt equivalents (<driver queues=.. rx_queue_size=..>).
"""

from __future__ import annotations

from vhtune.errors import TuneError
from vhtune.tune.knob import Knob, Value

QEMU_OPTIONS = {
    "queues": "-netdev ...,queues={v} -device virtio-net-pci,...,mq=on,vectors={vectors}",
    "rx_queue_size": "-device virtio-net-pci,...,rx_queue_size={v}",
    "tx_queue_size": "-device virtio-net-pci,...,tx_queue_size={v}",
    "poll_us": "-object iothread,id=io0,poll-max-ns={ns}",
}
LIBVIRT = {
    "queues": "virsh edit {vm}: <interface><driver queues='{v}'/></interface>",
    "rx_queue_size": "virsh edit {vm}: <interface><driver rx_queue_size='{v}'/></interface>",
    "tx_queue_size": "virsh edit {vm}: <interface><driver tx_queue_size='{v}'/></interface>",
    "poll_us": "virsh edit {vm}: <iothreads>, <iothread poll-max-ns='{ns}'/>",
}


class QemuOptionKnob(Knob):
    name = "qemu-option"
    restart_required = True

    def read(self) -> Value:
        return self.target.ident.get("current")

    def apply(self, value: Value) -> None:
        raise TuneError(
            f"{self.name} changes need the VM restarted; vhtune only prints them",
            "apply the printed command in the VM's definition and restart it",
        )

    def command(self, value: Value) -> str:
        if not isinstance(value, dict) or value.get("option") not in QEMU_OPTIONS:
            raise TuneError(f"qemu-option takes option/value with option in {', '.join(QEMU_OPTIONS)}")
        try:
            v = int(value["value"])
        except (KeyError, TypeError, ValueError):
            raise TuneError(
                f"qemu-option {value['option']} needs an integer value, got {value!r}",
                '{"option": "rx_queue_size", "value": 1024}',
            ) from None
        opt = value["option"]
        fields = {"v": v, "vectors": 2 * v + 2, "ns": v * 1000, "vm": self.target.ident.get("vm", "VM")}
        return f"restart with {QEMU_OPTIONS[opt].format(**fields)}  (libvirt: {LIBVIRT[opt].format(**fields)})"
