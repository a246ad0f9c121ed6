"""The guest's side of the lab: its /init script, the kernel command line that drives it, its result line.

The guest is a Debian 12 kernel with a busybox initramfs. ``/init`` reads ``vhl.*`` parameters from
/proc/cmdline, loads the virtio modules, configures eth0, runs one workload, prints exactly one line
``VHTUNE-RESULT {json}`` on the serial console and powers off (``poweroff -f``: no init system to ask).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

from vhtune.errors import LabError, UsageError

RESULT_TAG = "VHTUNE-RESULT"
READY_TAG = "VHTUNE-READY"
WORKLOADS = ("idle", "ping", "pktgen", "iperf3c", "iperf3s")

# Busybox ash. Parameters are whitelisted by name and by value characters before use (the command line is
# ours, but a typo must not become shell code).
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
P_wl=idle P_dur=5 P_count=0 P_size=60 P_rate=0 P_ip= P_peer= P_dmac= P_interval=0 P_port=5201 P_rev=0
for kv in $(cat /proc/cmdline); do
    case "$kv" in vhl.*=*) ;; *) continue ;; esac
    k=${kv%%=*}; k=${k#vhl.}; v=${kv#*=}
    case "$v" in *[!A-Za-z0-9.:/_-]*) echo "VHTUNE-WARN bad value for $k"; continue ;; esac
    case "$k" in
        wl|dur|count|size|rate|ip|peer|dmac|interval|port|rev) eval "P_$k=\$v" ;;
        *) echo "VHTUNE-WARN unknown parameter $k" ;;
    esac
done
for m in $(cat /modules.order); do insmod "/lib/modules/$m" 2>/dev/null || echo "VHTUNE-WARN insmod $m failed"; done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
# No IPv6: its DAD, MLD reports and router solicitations are sent on timers of their own and could leave
# after the final counter read below, so the back-end would count frames the guest did not report.
for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6; do
    [ -e $f ] && echo 1 > $f
done
if [ -e /sys/class/net/eth0 ]; then
    [ -n "$P_ip" ] && ip addr add "$P_ip" dev eth0
    ip link set eth0 up
fi
nstat() { cat /sys/class/net/eth0/statistics/$1 2>/dev/null || echo 0; }
echo "VHTUNE-READY uptime=$(cut -d' ' -f1 /proc/uptime) eth0=$([ -e /sys/class/net/eth0 ] && echo 1 || echo 0)"
tx0=$(nstat tx_packets); rx0=$(nstat rx_packets)
t0=$(cut -d' ' -f1 /proc/uptime)
rc=0; extra=
case "$P_wl" in
idle)
    sleep "$P_dur" ;;
ping)
    if [ "$P_interval" = 0 ]; then mode=-A; else mode="-i $P_interval"; fi
    n=$P_count; [ "$n" = 0 ] && n=1000000
    out=$(ping -q -c "$n" $mode -w "$P_dur" -W 1 "$P_peer" 2>&1); rc=$?
    tx=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
    rx=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
    avg=$(echo "$out" | sed -n 's#.*= [0-9.]*/\([0-9.]*\)/.*#\1#p')
    # busybox ping exits 1 when its -w deadline ends the run; success here means replies came back.
    if [ "${rx:-0}" -gt 0 ]; then rc=0; else rc=1; fi
    extra="\"sent\":${tx:-0},\"received\":${rx:-0},\"rtt_avg_ms\":${avg:-null}," ;;
pktgen)
    PG=/proc/net/pktgen
    echo "rem_device_all" > $PG/kpktgend_0
    echo "add_device eth0" > $PG/kpktgend_0
    D=$PG/eth0
    echo "count $P_count" > $D
    echo "pkt_size $P_size" > $D
    [ -n "$P_peer" ] && echo "dst ${P_peer}" > $D
    [ -n "$P_dmac" ] && echo "dst_mac $P_dmac" > $D
    [ "$P_rate" != 0 ] && echo "ratep $P_rate" > $D
    echo start > $PG/pgctrl &
    pg=$!
    # Bounded twice: pktgen stops at count (when non-zero), and this loop stops it at the duration.
    end=$(( $(cut -d. -f1 /proc/uptime) + P_dur ))
    while kill -0 $pg 2>/dev/null && [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do sleep 0.2; done
    kill -0 $pg 2>/dev/null && echo stop > $PG/pgctrl
    wait $pg
    sent=$(sed -n 's/.*pkts-sofar: \([0-9]*\).*/\1/p' $D)
    errs=$(sed -n 's/.*pkts-sofar: [0-9]* *errors: \([0-9]*\).*/\1/p' $D)
    extra="\"sent\":${sent:-0},\"errors\":${errs:-0},\"size\":$P_size," ;;
iperf3c)
    rev=; [ "$P_rev" = 1 ] && rev=-R   # -R: the server (netns side) sends, the guest receives
    out=$(iperf3 -c "$P_peer" -p "$P_port" -t "$P_dur" -f k --connect-timeout 3000 $rev 2>&1); rc=$?
    kbps=$(echo "$out" | awk '/receiver/{for(i=1;i<=NF;i++) if($i=="Kbits/sec") print $(i-1)}' | tail -n1)
    extra="\"kbps\":${kbps:-0}," ;;
iperf3s)
    timeout $((P_dur + 20)) iperf3 -s -1 -p "$P_port" -f k > /tmp/iperf3.out 2>&1; rc=$?
    kbps=$(awk '/receiver/{for(i=1;i<=NF;i++) if($i=="Kbits/sec") print $(i-1)}' /tmp/iperf3.out | tail -n1)
    extra="\"kbps\":${kbps:-0}," ;;
*)
    rc=2; extra="\"error\":\"unknown workload\"," ;;
esac
t1=$(cut -d' ' -f1 /proc/uptime)
# Quiesce before the final read. The peer's neighbour entry for us goes DELAY -> PROBE 5 s after its first
# use, and our ARP reply to that unicast probe could leave after the read: IFF_NOARP makes arp_rcv() drop
# ARP. virtio-net counts a TX frame when it reclaims the used buffer (free_old_xmit), not when it queues
# it, so the count is read again until two reads 0.2 s apart agree (bounded: 25 reads).
[ -e /sys/class/net/eth0 ] && ip link set eth0 arp off
last=-1; i=0
while [ "$(nstat tx_packets)" != "$last" ] && [ $i -lt 25 ]; do last=$(nstat tx_packets); sleep 0.2; i=$((i+1)); done
dtx=$(( $(nstat tx_packets) - tx0 )); drx=$(( $(nstat rx_packets) - rx0 ))
tail="\"eth0_tx\":$dtx,\"eth0_rx\":$drx,\"eth0_tx_total\":$(nstat tx_packets),\"t_start\":$t0,\"t_end\":$t1"
echo "VHTUNE-RESULT {\"workload\":\"$P_wl\",\"rc\":$rc,$extra$tail}"
sync
poweroff -f
"""

_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


@dataclass
class Workload:
    """One guest workload; ``cmdline()`` turns it into ``vhl.*`` kernel parameters."""

    kind: str = "idle"
    duration: int = 5
    ip: str | None = None  # guest address with prefix, e.g. 10.91.0.2/24
    peer: str | None = None  # address the workload talks to (inside the lab's netns)
    count: int = 0
    size: int = 60
    rate: int = 0  # pktgen packets per second (0 = as fast as it can)
    interval: float = 0.0  # ping interval; 0 = adaptive (-A: next as soon as a reply arrives)
    dmac: str | None = None
    port: int = 5201
    reverse: bool = False  # iperf3c: data flows netns → guest

    def validate(self) -> None:
        if self.kind not in WORKLOADS:
            raise UsageError(f"guest workload {self.kind!r} is unknown", hint=f"one of {', '.join(WORKLOADS)}")
        if not 1 <= self.duration <= 600:
            raise UsageError(f"guest workload duration {self.duration} s is out of range", hint="use 1..600")
        if self.ip is not None:
            try:
                ipaddress.IPv4Interface(self.ip)
            except ValueError as exc:
                raise UsageError(f"guest address {self.ip!r} is not an IPv4 address/prefix") from exc
        if self.peer is not None:
            try:
                ipaddress.IPv4Address(self.peer)
            except ValueError as exc:
                raise UsageError(f"peer address {self.peer!r} is not an IPv4 address") from exc
        if self.kind in ("ping", "pktgen", "iperf3c") and not self.peer:
            raise UsageError(f"guest workload {self.kind} needs a peer address")
        if not 0 <= self.count <= 10**9 or not 60 <= self.size <= 9000 or self.rate < 0:
            raise UsageError("pktgen count/size/rate out of range", hint="count 0..1e9, size 60..9000, rate ≥ 0")
        if self.dmac is not None and not _MAC_RE.match(self.dmac):
            raise UsageError(f"MAC address {self.dmac!r} is not of the form 02:00:00:00:00:01")

    def cmdline(self) -> str:
        self.validate()
        kv: dict[str, object] = {
            "wl": self.kind,
            "dur": self.duration,
            "count": self.count,
            "size": self.size,
            "rate": self.rate,
            "interval": f"{self.interval:g}",
            "port": self.port,
            "rev": int(self.reverse),
        }
        for k in ("ip", "peer", "dmac"):
            if getattr(self, k):
                kv[k] = getattr(self, k)
        return " ".join(f"vhl.{k}={v}" for k, v in kv.items())


def parse_result(console: str) -> dict[str, object]:
    """The guest's ``VHTUNE-RESULT`` JSON from its serial console text; ``LabError`` when absent or garbled."""
    lines = [ln for ln in console.splitlines() if ln.startswith(RESULT_TAG + " ")]
    if not lines:
        tail = " | ".join(console.strip().splitlines()[-3:])
        raise LabError(f"the guest printed no result line (console tail: {tail or 'empty'})")
    raw = lines[-1][len(RESULT_TAG) + 1 :].strip()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LabError(f"the guest's result line is not JSON: {raw[:120]!r}") from exc
    if not isinstance(data, dict):
        raise LabError("the guest's result line is not a JSON object")
    return data


def ready_uptime(console: str) -> float | None:
    """Guest uptime (s) at which its network was configured, from the ``VHTUNE-READY`` line."""
    m = re.search(rf"^{READY_TAG} uptime=([0-9.]+)", console, re.MULTILINE)
    return float(m.group(1)) if m else None
