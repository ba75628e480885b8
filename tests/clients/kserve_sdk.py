#!/usr/bin/env python3
"""Drives a running Warden with KServe's own Python SDK (the `kserve` package's
InferenceRESTClient over HTTPS and InferenceGRPCClient over gRPC+TLS, both with a bearer
token): liveness, readiness, model readiness and an inference. Runs in .venv-deploy
(where scripts/setup.sh installs kserve); the outputs are written as JSON for the Rust
test to compare with OpenVINO's own answer (tests/src/lib.rs `reference`).

usage: kserve_sdk.py REST_PORT GRPC_PORT CA_PEM TOKEN MODEL REQUEST_JSON OUT_JSON
"""
import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

REST, GRPC, CA, TOKEN, MODEL, REQUEST, OUT = sys.argv[1:8]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


def request():
    with open(REQUEST) as f:
        inp = json.load(f)["inputs"][0]
    x = np.array(inp["data"], dtype=np.float32).reshape(inp["shape"])
    i = InferInput(inp["name"], list(x.shape), inp["datatype"])
    i.set_data_from_numpy(x, binary_data=False)
    return InferRequest(model_name=MODEL, infer_inputs=[i])


def outputs(resp):
    return {o.name: o.as_numpy().astype(np.float64).ravel().tolist() for o in resp.outputs}


async def main():
    base = f"https://localhost:{REST}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", verify=CA))
    check(await rest.is_server_live(base, headers=headers), "REST is_server_live")
    check(await rest.is_server_ready(base, headers=headers), "REST is_server_ready")
    check(await rest.is_model_ready(base, MODEL, headers=headers), "REST is_model_ready")
    rest_out = outputs(await rest.infer(base, request(), model_name=MODEL, headers=headers))
    await rest.close()

    grpc = InferenceGRPCClient(f"localhost:{GRPC}", use_ssl=True, root_certificates=CA)
    meta = [("authorization", f"Bearer {TOKEN}")]
    check(await grpc.is_server_live(headers=meta), "gRPC is_server_live")
    check(await grpc.is_server_ready(headers=meta), "gRPC is_server_ready")
    check(await grpc.is_model_ready(MODEL, headers=meta), "gRPC is_model_ready")
    grpc_out = outputs(await grpc.infer(request(), headers=meta))
    await grpc.close()

    with open(OUT, "w") as f:
        json.dump({"rest": rest_out, "grpc": grpc_out}, f)
    print(f"{checks} passed, 0 failed")


asyncio.run(main())
