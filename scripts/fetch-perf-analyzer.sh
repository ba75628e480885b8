#!/usr/bin/env bash
# Fetches Triton's perf_analyzer, which tests/triton.rs runs against Warden over HTTPS
# and gRPC+TLS. The binary ships in the tritonclient[all] wheel (the `perf-analyzer`
# package on PyPI is a placeholder); it links libb64 (Debian libb64-0d) and CUDA's
# runtime library, taken from the nvidia-cuda-runtime-cu12 wheel (no GPU is needed or
# used). Both are unpacked into .runtime/perf_analyzer (git-ignored): bin/ and lib/.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022
TRITONCLIENT=2.51.0
CUDART=12.9.79
VERSION="$TRITONCLIENT-$CUDART"
DEST=.runtime/perf_analyzer
if [ -f "$DEST/.version" ] && [ "$(cat "$DEST/.version")" = "$VERSION" ]; then
  echo "perf_analyzer $TRITONCLIENT already in $DEST"
  exit 0
fi
if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
  apt-get update -qq && apt-get install -y -qq libb64-0d >/dev/null
fi
mkdir -p .cache/wheels
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .cache/wheels \
  "tritonclient[all]==$TRITONCLIENT" "nvidia-cuda-runtime-cu12==$CUDART"
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp/bin" "$DEST.tmp/lib"
python3 - .cache/wheels/tritonclient-"$TRITONCLIENT"-*.whl .cache/wheels/nvidia_cuda_runtime_cu12-"$CUDART"-*.whl "$DEST.tmp" <<'PY'
import os, sys, zipfile
triton, cuda, dest = sys.argv[1], sys.argv[2], sys.argv[3]
wanted = {
    (triton, "/bin/perf_analyzer"): "bin/perf_analyzer",
    (cuda, "/lib/libcudart.so.12"): "lib/libcudart.so.12",
}
found = set()
for wheel in (triton, cuda):
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            for (w, suffix), out in wanted.items():
                if w == wheel and info.filename.endswith(suffix):
                    with z.open(info) as src, open(os.path.join(dest, out), "wb") as f:
                        f.write(src.read())
                    os.chmod(os.path.join(dest, out), 0o755)
                    found.add(out)
missing = set(wanted.values()) - found
if missing:
    sys.exit(f"not found in the wheels: {sorted(missing)}")
PY
echo "$VERSION" > "$DEST.tmp/.version"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
if LD_LIBRARY_PATH="$DEST/lib" ldd "$DEST/bin/perf_analyzer" | grep -q 'not found'; then
  LD_LIBRARY_PATH="$DEST/lib" ldd "$DEST/bin/perf_analyzer" | grep 'not found' >&2
  exit 1
fi
echo "perf_analyzer $TRITONCLIENT in $DEST"
