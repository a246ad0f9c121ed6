#!/usr/bin/env bash
# Host preparation for vhtune (Debian 12, root). Every step checks first and does nothing when already done,
# so `make setup` is cheap to repeat. Called by `make setup`; safe to run by hand.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------------------------
# python3-bpfcc: bcc 0.26 (PyPI's "bcc" is an unrelated project). dpdk-dev carries dpdk-testpmd.
# linux-headers-amd64: bcc compiles probes against kernel headers (see the header links below).
PKGS=(python3-bpfcc bpftrace bpftool linux-headers-amd64 dpdk-dev qemu-system-x86 busybox-static iperf3
      iproute2 ethtool numactl procps kmod cpio gzip chromium)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends: qemu-system-x86 would otherwise pull a desktop stack.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "packages present"
fi

# --- kernel headers for bcc --------------------------------------------------------------------------------
# bcc looks in /lib/modules/$(uname -r)/{build,source}. When the running kernel ships none (a cloud or nested
# kernel), point them at the newest Debian headers. Those may be for an older kernel: vhtune's probes read only
# tracepoint fields and BPF helpers, whose layout comes from the running kernel, never struct offsets.
kdir=/lib/modules/$(uname -r)
if [[ ! -e $kdir/build/Makefile ]]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
    if [[ -n $hdr ]]; then
        common=${hdr%-amd64}-common
        mkdir -p "$kdir"
        ln -sfn "$hdr" "$kdir/build"
        ln -sfn "$common" "$kdir/source"
        log "linked $kdir/build -> $hdr"
    else
        log "WARNING: no kernel headers found under /usr/src; bcc cannot compile probes"
    fi
else
    log "kernel headers linked"
fi

# --- tracefs ------------------------------------------------------------------------------------------------
if [[ ! -e /sys/kernel/tracing/events ]]; then
    mount -t tracefs nodev /sys/kernel/tracing
    log "mounted tracefs"
fi

# --- hugepages (DPDK peers and hugepage-backed guests) --------------------------------------------------------
want=${VHTUNE_HUGEPAGES:-256}
have=$(cat /proc/sys/vm/nr_hugepages)
if ((have < want)); then
    echo "$want" > /proc/sys/vm/nr_hugepages
    log "hugepages $have -> $(cat /proc/sys/vm/nr_hugepages)"
fi
mountpoint -q /dev/hugepages || { mkdir -p /dev/hugepages; mount -t hugetlbfs nodev /dev/hugepages; }
exit 0
