#!/usr/bin/env python3
"""Drives a running Warden with real, unmodified KServe v2 clients: Triton's
tritonclient over HTTPS and over gRPC+TLS (both with a bearer token), and a raw gRPC
stub for the typed `contents` path. Results are checked against OpenVINO's Python API
run in process on the same model files. Exits non-zero on the first failed check.

usage: kserve_clients.py REST_PORT GRPC_PORT CA_PEM TOKEN MODELS_DIR
"""
import sys

import gevent.ssl
import grpc
import ml_dtypes
import numpy as np
import openvino as ov
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

REST, GRPC, CA, TOKEN, MODELS = sys.argv[1:6]
# tritonclient adds Inference-Header-Content-Length to the dict it is given, so every
# call gets a fresh one (a reused dict would carry a stale length into the next call).
def hdr():
    return {"Authorization": f"Bearer {TOKEN}"}


def ghdr():
    # gRPC metadata keys are lowercase by rule.
    return {"authorization": f"Bearer {TOKEN}"}

TOL = 1e-5
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


def expect_error(fn, status_substr, what):
    try:
        fn()
    except InferenceServerException as e:
        check(status_substr in str(e.status()) or status_substr in str(e), f"{what}: got {e.status()} {e}")
        return
    raise SystemExit(f"FAILED: {what}: no error")


def reference(model_file, feed):
    compiled = ov.Core().compile_model(model_file, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return {p.get_any_name(): np.asarray(v) for p, v in compiled(feed).items()}


def nsfw_input():
    from PIL import Image

    img = Image.open(f"{MODELS}/images/coffee.png").convert("RGB").resize((224, 224), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32)[:, :, ::-1] - np.array([104.0, 117.0, 123.0], dtype=np.float32)
    return np.ascontiguousarray(a[None, ...], dtype=np.float32)


x = nsfw_input()
want = reference(f"{MODELS}/nsfw/1/model.onnx", {"input_0": x})["4195"]

IDENTITY = {
    "BOOL": np.array([[True, False, True, True]]),
    "UINT8": np.array([[0, 255, 7, 128]], np.uint8),
    "UINT16": np.array([[0, 65535, 7, 300]], np.uint16),
    "UINT32": np.array([[0, 4294967295, 7, 300]], np.uint32),
    "UINT64": np.array([[0, 18446744073709551615, 7, 2**53 + 1]], np.uint64),
    "INT8": np.array([[-128, 127, 0, 5]], np.int8),
    "INT16": np.array([[-32768, 32767, 0, 5]], np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1, 0, 5]], np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1, 2**53 + 1, 5]], np.int64),
    "FP16": np.array([[1.5, -65504, 0.0001, 3]], np.float16),
    "FP32": np.array([[1.1, -3.4e38, 1e-40, 3]], np.float32),
    "FP64": np.array([[1.1, -1e300, 1e-310, 2**60 + 1]], np.float64),
    "BF16": np.array([[1.0, -2.0, 0.5, 3.0e38]], ml_dtypes.bfloat16),
}

# ---------------------------------------------------------------- HTTP (REST) + TLS
h = httpclient.InferenceServerClient(
    url=f"localhost:{REST}", ssl=True, ssl_options={"ca_certs": CA},
    ssl_context_factory=gevent.ssl.create_default_context,
)
check(h.is_server_live(headers=hdr()), "http live")
check(h.is_server_ready(headers=hdr()), "http ready")
meta = h.get_server_metadata(headers=hdr())
check(meta["name"] == "warden" and "binary_tensor_data" in meta["extensions"], f"http server metadata {meta}")
mm = h.get_model_metadata("nsfw", headers=hdr())
check(mm["name"] == "nsfw" and mm["platform"] == "OpenVINO" and mm["inputs"][0]["name"] == "input_0", f"http model metadata {mm}")
check(h.is_model_ready("nsfw", headers=hdr()), "http model ready")
check(h.is_model_ready("addn", "2", headers=hdr()), "http model version ready")

for binary in (True, False):
    inp = httpclient.InferInput("input_0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("4195", binary_data=binary)
    r = h.infer("nsfw", [inp], outputs=[out], request_id=f"req-{binary}", headers=hdr())
    got = r.as_numpy("4195")
    check(got.shape == want.shape and np.abs(got - want).max() <= TOL, f"http nsfw binary={binary}: {got} vs {want}")
    check(r.get_response()["id"] == f"req-{binary}", "http request id echoed")

# Output selection on a two-output model.
face = np.zeros((1, 128, 128, 3), np.float32)
inp = httpclient.InferInput("input", [1, 128, 128, 3], "FP32")
inp.set_data_from_numpy(face)
r = h.infer("blazeface", [inp], outputs=[httpclient.InferRequestedOutput("classificators")], headers=hdr())
names = [o["name"] for o in r.get_response()["outputs"]]
check(names == ["classificators"], f"http output selection {names}")

# Every datatype through the identity model, bytes back exactly.
# The identity model takes every input at once.
def identity_inputs(mod, binary):
    ins = []
    for dt, arr in IDENTITY.items():
        i = mod.InferInput(f"x_{dt}", list(arr.shape), dt)
        if mod is httpclient:
            i.set_data_from_numpy(arr, binary_data=binary)
        else:
            i.set_data_from_numpy(arr)
        ins.append(i)
    return ins

r = h.infer("identity", identity_inputs(httpclient, True), headers=hdr(),
            outputs=[httpclient.InferRequestedOutput(f"x_{dt}", binary_data=True) for dt in IDENTITY])
for dt, arr in IDENTITY.items():
    got = r.as_numpy(f"x_{dt}")
    check(got.dtype == arr.dtype and np.array_equal(got, arr), f"http binary identity {dt}: {got} vs {arr}")
json_types = {k: v for k, v in IDENTITY.items() if k not in ("UINT64", "INT64", "FP64", "BF16")}
ins = []
for dt, arr in IDENTITY.items():
    i = httpclient.InferInput(f"x_{dt}", list(arr.shape), dt)
    i.set_data_from_numpy(arr, binary_data=dt not in json_types)
    ins.append(i)
r = h.infer("identity", ins, headers=hdr(),
            outputs=[httpclient.InferRequestedOutput(f"x_{dt}", binary_data=dt not in json_types) for dt in IDENTITY])
for dt, arr in IDENTITY.items():
    got = r.as_numpy(f"x_{dt}")
    if dt in ("FP32", "FP16"):
        check(np.array_equal(got.astype(arr.dtype), arr), f"http json identity {dt}: {got} vs {arr}")
    else:
        check(np.array_equal(got, arr), f"http json identity {dt}: {got} vs {arr}")

# Versions: the right one answers.
v = np.ones((1, 4), np.float32)
for version, add in (("1", 1.0), ("2", 2.0), ("", 2.0)):
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(v)
    r = h.infer("addn", [inp], model_version=version, headers=hdr())
    check(np.array_equal(r.as_numpy("y"), v + add), f"http addn version {version!r}")
    check(r.get_response()["model_version"] == (version or "2"), "http model_version reported")

# Errors.
no_auth = httpclient.InferenceServerClient(url=f"localhost:{REST}", ssl=True, ssl_options={"ca_certs": CA},
                                           ssl_context_factory=gevent.ssl.create_default_context)
expect_error(lambda: no_auth.get_model_metadata("nsfw"), "401", "http without token")
expect_error(lambda: h.get_model_metadata("nope", headers=hdr()), "404", "http unknown model")
bad = httpclient.InferInput("input_0", [1, 224, 224, 4], "FP32")
bad.set_data_from_numpy(np.zeros((1, 224, 224, 4), np.float32))
expect_error(lambda: h.infer("nsfw", [bad], headers=hdr()), "400", "http wrong shape")
check(h.is_server_ready(headers=hdr()), "http still serving after errors")

# ---------------------------------------------------------------- gRPC + TLS
g = grpcclient.InferenceServerClient(url=f"localhost:{GRPC}", ssl=True, root_certificates=CA)
check(g.is_server_live(headers=ghdr()), "grpc live")
check(g.is_server_ready(headers=ghdr()), "grpc ready")
sm = g.get_server_metadata(headers=ghdr(), as_json=True)
check(sm["name"] == "warden" and "binary_tensor_data" in sm["extensions"], f"grpc server metadata {sm}")
gm = g.get_model_metadata("nsfw", headers=ghdr(), as_json=True)
check(gm["inputs"][0]["name"] == "input_0" and gm["inputs"][0]["shape"] == ["-1", "224", "224", "3"], f"grpc model metadata {gm}")
check(g.is_model_ready("blazeface", headers=ghdr()), "grpc model ready")

inp = grpcclient.InferInput("input_0", list(x.shape), "FP32")
inp.set_data_from_numpy(x)
r = g.infer("nsfw", [inp], request_id="grpc-1", headers=ghdr())
got = r.as_numpy("4195")
check(np.abs(got - want).max() <= TOL, f"grpc nsfw raw: {got} vs {want}")
check(r.get_response().id == "grpc-1", "grpc request id echoed")

r = g.infer("identity", identity_inputs(grpcclient, True), headers=ghdr())
for dt, arr in IDENTITY.items():
    got = r.as_numpy(f"x_{dt}")
    check(got.dtype == arr.dtype and np.array_equal(got, arr), f"grpc identity {dt}: {got} vs {arr}")

expect_error(lambda: grpcclient.InferenceServerClient(url=f"localhost:{GRPC}", ssl=True, root_certificates=CA)
             .get_model_metadata("nsfw"), "UNAUTHENTICATED", "grpc without token")
expect_error(lambda: g.get_model_metadata("nope", headers=ghdr()), "NOT_FOUND", "grpc unknown model")
bad = grpcclient.InferInput("input_0", [1, 224, 224, 4], "FP32")
bad.set_data_from_numpy(np.zeros((1, 224, 224, 4), np.float32))
expect_error(lambda: g.infer("nsfw", [bad], headers=ghdr()), "INVALID_ARGUMENT", "grpc wrong shape")
wrong_type = grpcclient.InferInput("input_0", list(x.shape), "FP64")
wrong_type.set_data_from_numpy(x.astype(np.float64))
expect_error(lambda: g.infer("nsfw", [wrong_type], headers=ghdr()), "INVALID_ARGUMENT", "grpc wrong datatype")

# Typed `contents` through a plain generated stub.
with open(CA, "rb") as f:
    channel = grpc.secure_channel(f"localhost:{GRPC}", grpc.ssl_channel_credentials(f.read()))
stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
req = service_pb2.ModelInferRequest(model_name="addn", model_version="1", id="typed")
t = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
t.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
resp = stub.ModelInfer(req, metadata=[("authorization", f"Bearer {TOKEN}")])
y = np.frombuffer(resp.raw_output_contents[0], dtype=np.float32)
check(resp.id == "typed" and resp.model_version == "1" and list(y) == [2.0, 3.0, 4.0, 5.0], f"grpc typed contents {y}")
req.inputs[0].contents.fp32_contents.append(5.0)
try:
    stub.ModelInfer(req, metadata=[("authorization", f"Bearer {TOKEN}")])
    raise SystemExit("FAILED: typed contents with 5 elements for 4 accepted")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"grpc typed contents count: {e.code()}")
check(g.is_server_ready(headers=ghdr()), "grpc still serving after errors")

print(f"{checks} passed, 0 failed")
