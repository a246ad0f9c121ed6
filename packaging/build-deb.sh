#!/usr/bin/env bash
# Builds dist/vhtune_<version>_amd64.deb with dpkg-deb.
#
# Debian 12 packages bcc (python3-bpfcc) but not pyarrow, so the .deb carries the wheels of vhtune and of its
# Python dependencies, and postinst makes a private venv in /usr/lib/vhtune/venv from them, offline
# (--no-index). The venv uses --system-site-packages so that Debian's bcc is importable, the same rule as the
# development venv: bcc comes from the distro, everything else from the bundled wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
out=${1:-dist}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/vhtune_${version}_amd64

mkdir -p "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/lib/vhtune/wheels" "$pkg/lib/systemd/system" \
         "$pkg/usr/share/vhtune" "$pkg/usr/share/doc/vhtune"
# Wheels for the target interpreter (Debian 12: CPython 3.11, x86_64). The build Python is 3.11 too.
py=${PYTHON:-python3}
"$py" -m pip wheel -q --wheel-dir "$pkg/usr/lib/vhtune/wheels" . 2>&1 | grep -v "^WARNING: Location" || true
ls "$pkg"/usr/lib/vhtune/wheels/vhtune-*.whl >/dev/null

cat > "$pkg/usr/bin/vhtune" <<'SH'
#!/bin/sh
exec /usr/lib/vhtune/venv/bin/vhtune "$@"
SH
chmod 0755 "$pkg/usr/bin/vhtune"
install -m 0644 packaging/vhtune.service "$pkg/lib/systemd/system/vhtune.service"
install -m 0644 packaging/grafana-dashboard.json "$pkg/usr/share/vhtune/grafana-dashboard.json"
# The eBPF sources: bcc compiles them on the host at record time (vhtune/probes looks here when packaged).
install -d "$pkg/usr/share/vhtune/probes"
install -m 0644 probes/*.bpf.c probes/*.h "$pkg/usr/share/vhtune/probes/"
install -m 0644 README.md "$pkg/usr/share/doc/vhtune/README.md"

installed_kb=$(du -sk "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<CTL
Package: vhtune
Version: ${version}
Section: admin
Priority: optional
Architecture: amd64
Maintainer: vhtune developers <vhtune@localhost>
Depends: python3 (>= 3.11), python3 (<< 3.12), python3-venv, python3-bpfcc, iproute2, procps
Recommends: linux-headers-amd64, bpftool
Suggests: dpdk-dev, qemu-system-x86
Installed-Size: ${installed_kb}
Description: eBPF-assisted observability and tuning for vhost networking
 vhtune records the VM network path (vhost-net and vhost-user back-end threads, taps, eventfd kicks and
 irqfd interrupt injection) with eBPF tracepoints, finds the hop that limits each VM and recommends,
 applies, verifies and rolls back tuning. Includes a Prometheus agent (systemd unit vhtune.service).
CTL

cat > "$pkg/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    rm -rf /usr/lib/vhtune/venv
    python3 -m venv --system-site-packages /usr/lib/vhtune/venv
    /usr/lib/vhtune/venv/bin/pip install -q --no-index --find-links /usr/lib/vhtune/wheels vhtune
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
fi
exit 0
SH
cat > "$pkg/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl stop vhtune.service >/dev/null 2>&1 || true
fi
exit 0
SH
cat > "$pkg/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
case "$1" in
    remove|purge) rm -rf /usr/lib/vhtune/venv ;;
esac
if [ "$1" = purge ]; then
    rm -rf /var/lib/vhtune
fi
exit 0
SH
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

mkdir -p "$out"
dpkg-deb --root-owner-group -Zgzip -z1 --build "$pkg" "$out/" >/dev/null
ls "$out"/vhtune_"${version}"_amd64.deb
