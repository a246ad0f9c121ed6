"""Guest image builder (``vhtune lab image``): a kernel and an initramfs made from Debian packages only.

- Kernel: ``apt-get download linux-image-<abi>-amd64`` (the one ``linux-image-amd64`` points at). Its vmlinuz
  is a bzImage whose payload is an xz stream holding the ELF vmlinux; QEMU's ``-kernel`` boots that ELF through
  its PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18), skipping the real-mode decompressor, which is slow
  under TCG. Modules: plain .ko files in Debian 12; the .deb carries no modules.dep (depmod runs at install),
  so the load order comes from each module's ``.modinfo`` ``depends=`` string.
- Userland: ``busybox-static`` and ``iperf3`` with the shared libraries ``ldd`` names, taken from the host's
  installed Debian packages (``make setup`` installs them), each file checked to belong to a package.
- Cache: ``<cache>/image/<key>/`` where key hashes every package=version plus the builder and init script, so
  the image is rebuilt only when one of them changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vhtune.errors import CapabilityError, LabError
from vhtune.lab.cpio import write_newc
from vhtune.lab.guestinit import INIT_SCRIPT
from vhtune.lab.proc import run

BUILDER_VERSION = 1
MODULES = ("virtio_pci", "virtio_net", "pktgen")
# Where those and their dependencies live inside the linux-image package (extracting only these is fast).
MODULE_DIRS = ("drivers/virtio", "drivers/net", "net/core")
USER_BINARIES = ("/bin/busybox", "/usr/bin/iperf3")
XZ_MAGIC = b"\xfd7zXZ\x00"


@dataclass
class GuestImage:
    kernel: Path  # ELF vmlinux, PVH-bootable
    initrd: Path  # gzip'd newc cpio
    key: str
    packages: dict[str, str]
    directory: Path
    built: bool  # False when it came from the cache

    def manifest(self) -> dict[str, object]:
        return {
            "key": self.key,
            "kernel": str(self.kernel),
            "initrd": str(self.initrd),
            "packages": self.packages,
            "builder": BUILDER_VERSION,
        }


def cache_root() -> Path:
    return Path(os.environ.get("VHTUNE_LAB_CACHE", "/var/cache/vhtune/lab"))


# --- package facts --------------------------------------------------------------------------------------
def kernel_package(root: Path | None = None) -> tuple[str, str]:
    """(package, version) of the Debian kernel image ``linux-image-amd64`` depends on.

    apt-cache takes seconds on a loaded host, so the answer is remembered next to the cache and reused while
    apt's package cache (rebuilt by ``apt-get update``) is unchanged."""
    memo = (root or cache_root()) / "kernel-package.json"
    stamp = _apt_stamp()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        m = json.loads(memo.read_text())
        if m["apt_stamp"] == stamp:
            return str(m["package"]), str(m["version"])
    out = run(["apt-cache", "depends", "linux-image-amd64"]).stdout
    dep = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)", out)
    if not dep:
        raise CapabilityError(
            "apt knows no linux-image-amd64 kernel", hint="run `apt-get update` (part of `make setup`)"
        )
    pkg = dep.group(1)
    show = run(["apt-cache", "show", "--no-all-versions", pkg]).stdout
    v = re.search(r"^Version:\s*(\S+)", show, re.MULTILINE)
    if not v:
        raise CapabilityError(f"apt has no version for {pkg}", hint="run `apt-get update`")
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({"apt_stamp": stamp, "package": pkg, "version": v.group(1)}))
    return pkg, v.group(1)


def _apt_stamp() -> str:
    parts = []
    for p in (Path("/var/cache/apt/pkgcache.bin"), Path("/var/lib/apt/lists")):
        with contextlib.suppress(OSError):
            st = p.stat()
            parts.append(f"{p}:{st.st_mtime_ns}:{st.st_size}")
    return "|".join(parts)


def _spellings(path: str) -> list[str]:
    # Debian 12's merged /usr registers a file under either its /usr or its root spelling.
    out = [path, os.path.realpath(path)]
    out += [p.removeprefix("/usr") for p in out if p.startswith("/usr/")]
    out += ["/usr" + p for p in out if not p.startswith("/usr/")]
    return list(dict.fromkeys(out))


def _owners(paths: list[str]) -> dict[str, tuple[str, str]]:
    """path → (package, version) that installed it, with one dpkg-query for all paths and one for versions."""
    spell = {p: _spellings(p) for p in paths}
    cp = run(["dpkg-query", "-S", *sorted({s for v in spell.values() for s in v})], check=False)
    owner_of: dict[str, str] = {}
    for line in cp.stdout.splitlines():
        owners, _, where = line.partition(": ")
        if where:
            owner_of[where.strip()] = owners.split(",")[0].strip().split(":")[0]
    pkg_of: dict[str, str] = {}
    for p, ss in spell.items():
        found = next((owner_of[s] for s in ss if s in owner_of), None)
        if found is None:
            raise CapabilityError(f"{p} belongs to no installed Debian package", hint="run `make setup`")
        pkg_of[p] = found
    pkgs = sorted(set(pkg_of.values()))
    fmt = "${Package} ${Version}\n"
    ver = dict(
        ln.split(" ", 1) for ln in run(["dpkg-query", "-W", f"-f={fmt}", *pkgs]).stdout.splitlines() if " " in ln
    )
    return {p: (pk, ver.get(pk, "?")) for p, pk in pkg_of.items()}


def _shared_libs(binary: str) -> list[str]:
    out = run(["ldd", binary], check=False).stdout
    libs = re.findall(r"=>\s*(/\S+)", out) + re.findall(r"^\s*(/\S+ld-linux\S*)\s", out, re.MULTILINE)
    return sorted(set(libs))


def userland_files() -> dict[str, tuple[str, str]]:
    """Every guest userland file → its (package, version)."""
    paths: list[str] = []
    for b in USER_BINARIES:
        if not Path(b).exists():
            raise CapabilityError(f"{b} is missing", hint="run `make setup` (busybox-static, iperf3)")
        paths += [b, *_shared_libs(b)]
    return _owners(list(dict.fromkeys(paths)))


def image_key(packages: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(f"builder={BUILDER_VERSION}\n".encode())
    h.update(INIT_SCRIPT.encode())
    h.update(",".join(MODULES).encode())
    for k in sorted(packages):
        h.update(f"{k}={packages[k]}\n".encode())
    return h.hexdigest()[:16]


# --- kernel ---------------------------------------------------------------------------------------------
def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage whose payload is xz-compressed (Debian's choice for amd64)."""
    off = bzimage.find(XZ_MAGIC)
    while off >= 0:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            out = dec.decompress(bzimage[off:])
        except lzma.LZMAError:
            out = b""
        if out[:4] == b"\x7fELF":
            return out
        off = bzimage.find(XZ_MAGIC, off + 1)
    raise LabError("no xz-compressed ELF found inside the kernel image")


XEN_ELFNOTE_PHYS32_ENTRY = 18


def has_pvh_entry(elf: bytes) -> bool:
    """Whether an ELF64 kernel carries the Xen PVH entry note (name "Xen", type 18) QEMU's -kernel needs."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        off, end = p_offset, p_offset + p_filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, off)
            name = elf[off + 12 : off + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            off += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def modinfo_depends(ko: bytes) -> list[str]:
    """Module names from the ``depends=`` entry of a .ko's .modinfo (NUL-separated key=value strings)."""
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko)
    if not m or not m.group(1):
        return []
    return [d.decode() for d in m.group(1).split(b",") if d]


def module_order(modroot: Path, targets: tuple[str, ...]) -> list[Path]:
    """Target modules and their dependencies, dependencies first (paths relative to ``modroot``)."""
    index: dict[str, Path] = {}
    for ko in modroot.rglob("*.ko"):
        index[ko.stem.replace("-", "_")] = ko
    order: list[Path] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        key = name.replace("-", "_")
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            raise LabError(f"module dependency loop: {' → '.join((*chain, name))}")
        if key not in index:
            raise LabError(
                f"module {name} (needed by {chain[-1] if chain else 'the guest'}) is not in the kernel package"
            )
        state[key] = 1
        for dep in modinfo_depends(index[key].read_bytes()):
            visit(dep, (*chain, name))
        state[key] = 2
        order.append(index[key].relative_to(modroot))

    for t in targets:
        visit(t, ())
    return order


def _fetch_kernel_deb(pkg: str, version: str, debdir: Path) -> Path:
    debdir.mkdir(parents=True, exist_ok=True)
    for f in debdir.glob(f"{pkg}_*.deb"):
        if f.name.startswith(f"{pkg}_{version.replace(':', '%3a')}_"):
            return f
    # apt drops privileges to _apt for downloads; a root-only cache dir makes it fall back (harmless warning).
    cp = subprocess.run(
        ["apt-get", "download", "-q", f"{pkg}={version}"], cwd=debdir, capture_output=True, text=True, timeout=600
    )
    debs = sorted(debdir.glob(f"{pkg}_*.deb"))
    if cp.returncode != 0 or not debs:
        raise LabError(f"`apt-get download {pkg}` failed: {cp.stderr.strip()[-200:]}", hint="check apt's sources")
    for old in debdir.glob("linux-image-*.deb"):
        if old.name != debs[-1].name and version.replace(":", "%3a") not in old.name:
            old.unlink(missing_ok=True)
    return debs[-1]


def _unpack_kernel(deb: Path, dest: Path) -> tuple[Path, Path]:
    """Extract vmlinuz and the needed module folders; returns (vmlinuz, modules root)."""
    dest.mkdir(parents=True, exist_ok=True)
    pats = ["./boot/vmlinuz-*"] + [f"./lib/modules/*/kernel/{d}/*" for d in MODULE_DIRS]
    tar_cmd = ["tar", "-x", "-C", str(dest), "--wildcards", *pats]
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as deb_p:
        cp = subprocess.run(tar_cmd, stdin=deb_p.stdout, capture_output=True, text=True, timeout=300)
    if cp.returncode != 0:
        raise LabError(f"cannot unpack {deb.name}: {cp.stderr.strip()[-200:]}")
    vmlinuz = sorted((dest / "boot").glob("vmlinuz-*"))
    mods = sorted((dest / "lib" / "modules").glob("*/kernel"))
    if not vmlinuz or not mods:
        raise LabError(f"{deb.name} holds no vmlinuz or no modules")
    return vmlinuz[0], mods[0]


# --- build ----------------------------------------------------------------------------------------------
def current_packages(root: Path | None = None) -> tuple[dict[str, str], dict[str, tuple[str, str]], tuple[str, str]]:
    kpkg = kernel_package(root)
    files = userland_files()
    packages = {kpkg[0]: kpkg[1], **dict(files.values())}
    return packages, files, kpkg


def cached(root: Path | None = None) -> GuestImage | None:
    """The cached image for the current package versions, or None."""
    packages, _files, _k = current_packages(root)
    return _load(root or cache_root(), packages)


def _load(root: Path, packages: dict[str, str]) -> GuestImage | None:
    key = image_key(packages)
    d = root / "image" / key
    kernel, initrd = d / "vmlinux", d / "initramfs.cpio.gz"
    if (d / "manifest.json").exists() and kernel.exists() and initrd.exists():
        return GuestImage(kernel, initrd, key, packages, d, built=False)
    return None


def ensure_image(root: Path | None = None, force: bool = False) -> GuestImage:
    """The guest image for the current package versions, building it when absent (or ``force``)."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    packages, files, (kpkg, kver) = current_packages(root)
    if not force and (img := _load(root, packages)):
        return img
    # One builder at a time (parallel test runs share the cache); a waiter finds the image built.
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (img := _load(root, packages)):
            return img
        return _build(root, packages, files, kpkg, kver)


def _build(root: Path, packages: dict[str, str], files: dict[str, tuple[str, str]], kpkg: str, kver: str) -> GuestImage:
    key = image_key(packages)
    final = root / "image" / key
    deb = _fetch_kernel_deb(kpkg, kver, root / "debs")
    with tempfile.TemporaryDirectory(prefix="vhl-image-", dir=root) as tmp:
        work = Path(tmp)
        vmlinuz, modroot = _unpack_kernel(deb, work / "deb")
        out = work / "out"
        out.mkdir()
        vmlinux = extract_vmlinux(vmlinuz.read_bytes())
        if not has_pvh_entry(vmlinux):
            raise LabError(f"{deb.name}: the kernel has no PVH entry note; QEMU -kernel cannot boot it as an ELF")
        (out / "vmlinux").write_bytes(vmlinux)
        tree = work / "initramfs"
        _populate(tree, modroot, files)
        write_newc(tree, out / "initramfs.cpio.gz")
        img = GuestImage(out / "vmlinux", out / "initramfs.cpio.gz", key, packages, final, built=True)
        man = {**img.manifest(), "kernel": "vmlinux", "initrd": "initramfs.cpio.gz"}
        (out / "manifest.json").write_text(json.dumps(man, indent=2))
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out, final)
    for old in (root / "image").iterdir():
        if old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    return GuestImage(final / "vmlinux", final / "initramfs.cpio.gz", key, packages, final, built=True)


def _populate(tree: Path, modroot: Path, files: dict[str, tuple[str, str]]) -> None:
    for d in ("bin", "usr/bin", "proc", "sys", "dev", "tmp", "lib/modules", "lib64", "lib/x86_64-linux-gnu"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    order = module_order(modroot, MODULES)
    for rel in order:
        dst = tree / "lib" / "modules" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(modroot / rel, dst)
    (tree / "modules.order").write_text("".join(f"{r}\n" for r in order))
    for src in files:
        # Copy the real file under the name the loader asks for (symlinks resolved).
        dst = tree / src.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.realpath(src), dst)
        dst.chmod(0o755)
    init = tree / "init"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
