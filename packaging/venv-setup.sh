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
# pip, minus two harmless notices: a configured local index (file://…/simple) that lacks some package warns
# once per package, and setuptools warns about every editable install. Errors and pip's exit status pass.
pip_quiet() {
    PYTHONWARNINGS="ignore:Editable installation" "$venv/bin/pip" "$@" 2>&1 |
        { grep -v "^WARNING: Location 'file://[^']*' is ignored: it is neither a file nor a directory\.$" || true; }
}
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    pip_quiet install -q --upgrade pip
    pip_quiet install -q -e '.[dev]'
    touch "$stamp"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$venv/distro-bcc"
ln -sfn /usr/lib/python3/dist-packages/bcc "$venv/distro-bcc/bcc"
echo "$(cd "$venv/distro-bcc" && pwd)" > "$site/vhtune-distro-bcc.pth"
