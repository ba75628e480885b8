#!/usr/bin/env bash
# Installs the benchmark peer (MLServer + OpenVINO) into <repo>/.bench/peer-venv.
# Idempotent: does nothing when the venv already holds exactly requirements.txt.
# Env: PYTHON (default python3.11), PEER_VENV (default <repo>/.bench/peer-venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
req="$repo/bench/peer/requirements.txt"
venv=${PEER_VENV:-$repo/.bench/peer-venv}
python=${PYTHON:-python3.11}
stamp="$venv/.peer-requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)

works() { "$venv/bin/python" -c 'import mlserver, openvino' >/dev/null 2>&1; }
if [[ -x "$venv/bin/mlserver" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && works; then
  echo "peer venv up to date: $venv"
  exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
  echo "setup.sh: $python not found (MLServer 1.7.1 needs Python 3.9-3.12)" >&2
  exit 1
fi
if [[ -f "$venv/pyvenv.cfg" ]] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
  # A venv whose interpreter links were lost (a copy that turned the symlinks
  # bin/python*, lib64 into plain files): relink them, keep the packages.
  echo "peer venv: repairing interpreter links in $venv"
  for f in "$venv"/bin/python "$venv"/bin/python3 "$venv"/bin/python3.* "$venv/lib64"; do
    [[ -f "$f" && ! -L "$f" && $(stat -c %s "$f") -lt 256 ]] && rm -f "$f"
  done
  "$python" -m venv --upgrade "$venv"
  [[ -e "$venv/lib64" ]] || ln -s lib "$venv/lib64"
fi
if [[ ! -x "$venv/bin/python" ]]; then
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
# Fail here, not at benchmark time, if the stack does not import.
"$venv/bin/python" -c 'import mlserver, openvino, uvloop, httptools; print("mlserver", mlserver.__version__, "openvino", openvino.__version__)'
echo "$want" >"$stamp"
echo "peer venv ready: $venv"
