#!/usr/bin/env bash
# Fetches the OpenVINO runtime: the openvino==2026.4.1 wheel from PyPI (with pip), of
# which only the C/C++ libraries under openvino/libs/ are unpacked into
# .runtime/openvino (git-ignored). The backend loads libopenvino_c.so from there
# (override with --openvino-dir or WARDEN_OPENVINO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022
VERSION=2026.4.1
DEST=.runtime/openvino
if [ -f "$DEST/.version" ] && [ "$(cat "$DEST/.version")" = "$VERSION" ]; then
  echo "OpenVINO runtime $VERSION already in $DEST"
  exit 0
fi
mkdir -p .cache/wheels
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .cache/wheels "openvino==$VERSION"
wheel=$(ls .cache/wheels/openvino-"$VERSION"-*.whl | head -n1)
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
python3 - "$wheel" "$DEST.tmp" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.startswith("openvino/libs/") or info.is_dir():
            continue
        name = os.path.basename(info.filename)
        with z.open(info) as src, open(os.path.join(dest, name), "wb") as out:
            out.write(src.read())
        os.chmod(os.path.join(dest, name), 0o755 if ".so" in name else 0o644)
PY
# The wheel carries only versioned names; the loader wants the plain one.
c_lib=$(cd "$DEST.tmp" && ls libopenvino_c.so.* | head -n1)
ln -sf "$c_lib" "$DEST.tmp/libopenvino_c.so"
echo "$VERSION" > "$DEST.tmp/.version"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "OpenVINO runtime $VERSION unpacked into $DEST ($(ls "$DEST" | wc -l) files)"
