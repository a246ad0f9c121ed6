#!/usr/bin/env bash
# Creates .venv with vhtune installed editable (plus dev tools), and makes *only* the distro bcc package
# importable in it: a private directory holding one symlink, added through a .pth file. Putting all of
# /usr/lib/python3/dist-packages on sys.path would shadow the venv's numpy/pandas with Debian's.
set -euo pipefail
venv=${1:-.venv}
py=${PYTHON:-python3}
stamp=$venv/.vhtune-installed
if [[ ! -x $venv/bin/python ]]; then
    "$py" -m venv "$venv"
fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e '.[dev]'
    touch "$stamp"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$venv/distro-bcc"
ln -sfn /usr/lib/python3/dist-packages/bcc "$venv/distro-bcc/bcc"
echo "$(cd "$venv/distro-bcc" && pwd)" > "$site/vhtune-distro-bcc.pth"
