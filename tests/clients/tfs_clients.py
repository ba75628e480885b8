#!/usr/bin/env python3
"""Drives a running Warden with TensorFlow Serving API clients, unmodified: Intel's
`ovmsclient` over gRPC with a client certificate (mTLS), the TFS gRPC stubs it ships
with a bearer token in the metadata (typed `*_val` fields as well as
`tensor_content`), and the TFS REST API with `requests` over HTTPS. Results are
checked against OpenVINO's Python API run in process on the same model files. Exits
non-zero on the first failed check.

usage: tfs_clients.py GRPC_PORT REST_PORT CA_PEM CLIENT_CERT CLIENT_KEY TOKEN MODELS_DIR
"""
import base64
import sys

import grpc
import ml_dtypes
import numpy as np
import openvino as ov
import requests
from ovmsclient import make_grpc_client
from ovmsclient.tfs_compat.protos.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from ovmsclient.tfs_compat.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

GRPC, REST, CA, CERT, KEY, TOKEN, MODELS = sys.argv[1:8]
TOL = 1e-5
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


def close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    check(got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}")
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    check(diff <= TOL, f"{what}: max difference {diff}")


def reference(model_file, feed):
    compiled = ov.Core().compile_model(model_file, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return {p.get_any_name(): np.asarray(v) for p, v in compiled(feed).items()}


def nsfw_input():
    from PIL import Image

    img = Image.open(f"{MODELS}/images/coffee.png").convert("RGB").resize((224, 224), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32)[:, :, ::-1] - np.array([104.0, 117.0, 123.0], dtype=np.float32)
    return np.ascontiguousarray(a[None, ...], dtype=np.float32)


def face_input():
    from PIL import Image

    img = Image.open(f"{MODELS}/images/astronaut.png").convert("RGB").resize((128, 128), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(a[None, ...], dtype=np.float32)


x_nsfw = nsfw_input()
want_nsfw = reference(f"{MODELS}/nsfw/1/model.onnx", {"input_0": x_nsfw})
x_face = face_input()
want_face = reference(f"{MODELS}/blazeface/1/model.tflite", {"input": x_face})

# ------------------------------------------------------- ovmsclient, gRPC + mTLS
tls = {"client_key_path": KEY, "client_cert_path": CERT, "server_cert_path": CA}
client = make_grpc_client(f"localhost:{GRPC}", tls_config=tls)

for model in ("blazeface", "nsfw"):
    status = client.get_model_status(model)
    check(status == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": "OK"}},
          f"ovmsclient status {model}: {status}")
status = client.get_model_status("nsfw", model_version=1)
check(list(status) == [1] and status[1]["state"] == "AVAILABLE", f"ovmsclient status of version 1: {status}")

meta = client.get_model_metadata("blazeface")
check(meta["model_version"] == 1, f"ovmsclient metadata version: {meta}")
check(meta["inputs"] == {"input": {"shape": [1, 128, 128, 3], "dtype": "DT_FLOAT"}}, f"ovmsclient metadata inputs: {meta}")
check(set(meta["outputs"]) == {"regressors", "classificators"}, f"ovmsclient metadata outputs: {meta}")
check(all(o["dtype"] == "DT_FLOAT" for o in meta["outputs"].values()), f"ovmsclient output dtypes: {meta}")
meta = client.get_model_metadata("nsfw", model_version=1)
# A dynamic dimension is -1, as in TFS.
check(meta["inputs"]["input_0"]["shape"] == [-1, 224, 224, 3], f"ovmsclient nsfw metadata: {meta}")

# Two outputs come back as a dict, one as the array itself.
out = client.predict({"input": x_face}, "blazeface")
check(set(out) == set(want_face), f"ovmsclient blazeface outputs: {list(out)}")
for name, want in want_face.items():
    close(out[name], want, f"ovmsclient blazeface {name}")
out = client.predict({"input_0": x_nsfw}, "nsfw", model_version=1)
close(out, want_nsfw["4195"], "ovmsclient nsfw")

# The client certificate is what authenticates: without one, nothing is served.
anonymous = make_grpc_client(f"localhost:{GRPC}", tls_config={"server_cert_path": CA})
try:
    anonymous.get_model_status("nsfw")
    raise SystemExit("FAILED: served without a client certificate or token")
except SystemExit:
    raise
except Exception as e:  # ovmsclient's own error classes
    check("credentials" in str(e).lower() or "unauthenticated" in str(e).lower() or "authent" in str(e).lower(),
          f"no certificate: {e}")

# ------------------------------------------- TFS gRPC stubs + a bearer token
channel = grpc.secure_channel(f"localhost:{GRPC}", grpc.ssl_channel_credentials(root_certificates=open(CA, "rb").read()))
predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
md = [("authorization", f"Bearer {TOKEN}")]


def shape(dims):
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


def request(model, inputs, version=None, output_filter=()):
    r = predict_pb2.PredictRequest()
    r.model_spec.name = model
    if version is not None:
        r.model_spec.version.value = version
    for name, t in inputs.items():
        r.inputs[name].CopyFrom(t)
    r.output_filter.extend(output_filter)
    return r


def to_array(t):
    from ovmsclient.tfs_compat.grpc.tensors import make_ndarray

    return make_ndarray(t)


# Typed float_val, not tensor_content.
typed = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape(x_nsfw.shape),
                               float_val=x_nsfw.ravel().tolist())
r = predict_stub.Predict(request("nsfw", {"input_0": typed}), metadata=md)
close(to_array(r.outputs["4195"]), want_nsfw["4195"], "stub nsfw float_val")
check(r.model_spec.name == "nsfw" and r.model_spec.version.value == 1, f"stub model_spec {r.model_spec}")

# output_filter: one of blazeface's two outputs.
content = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape(x_face.shape),
                                 tensor_content=x_face.tobytes())
r = predict_stub.Predict(request("blazeface", {"input": content}, version=1, output_filter=["classificators"]), metadata=md)
check(list(r.outputs) == ["classificators"], f"stub output_filter: {list(r.outputs)}")
close(to_array(r.outputs["classificators"]), want_face["classificators"], "stub blazeface classificators")

# Every typed field through the identity model, values back exactly.
IDENTITY = {
    "BOOL": (np.array([[True, False, True, True]]), types_pb2.DT_BOOL, "bool_val"),
    "UINT8": (np.array([[0, 255, 7, 128]], np.uint8), types_pb2.DT_UINT8, "int_val"),
    "UINT16": (np.array([[0, 65535, 7, 300]], np.uint16), types_pb2.DT_UINT16, "int_val"),
    "UINT32": (np.array([[0, 4294967295, 7, 300]], np.uint32), types_pb2.DT_UINT32, "uint32_val"),
    "UINT64": (np.array([[0, 18446744073709551615, 7, 2**53 + 1]], np.uint64), types_pb2.DT_UINT64, "uint64_val"),
    "INT8": (np.array([[-128, 127, 0, 5]], np.int8), types_pb2.DT_INT8, "int_val"),
    "INT16": (np.array([[-32768, 32767, 0, 5]], np.int16), types_pb2.DT_INT16, "int_val"),
    "INT32": (np.array([[-(2**31), 2**31 - 1, 0, 5]], np.int32), types_pb2.DT_INT32, "int_val"),
    "INT64": (np.array([[-(2**63), 2**63 - 1, 2**53 + 1, 5]], np.int64), types_pb2.DT_INT64, "int64_val"),
    "FP16": (np.array([[1.5, -65504, 0.0001, 3]], np.float16), types_pb2.DT_HALF, "half_val"),
    "FP32": (np.array([[1.1, -3.4e38, 1e-40, 3]], np.float32), types_pb2.DT_FLOAT, "float_val"),
    "FP64": (np.array([[1.1, -1e300, 1e-310, 2**60 + 1]], np.float64), types_pb2.DT_DOUBLE, "double_val"),
    "BF16": (np.array([[1.0, -2.0, 0.5, 3.0e38]], ml_dtypes.bfloat16), types_pb2.DT_BFLOAT16, "half_val"),
}
inputs = {}
for dt, (arr, tf_type, field) in IDENTITY.items():
    t = tensor_pb2.TensorProto(dtype=tf_type, tensor_shape=shape(arr.shape))
    # Half-precision values travel as their 16 bits.
    values = arr.view(np.uint16).ravel().tolist() if field == "half_val" else arr.ravel().tolist()
    getattr(t, field).extend(values)
    inputs[f"x_{dt}"] = t
r = predict_stub.Predict(request("identity", inputs), metadata=md)
for dt, (arr, tf_type, _) in IDENTITY.items():
    t = r.outputs[f"x_{dt}"]
    check(t.dtype == tf_type and [d.size for d in t.tensor_shape.dim] == list(arr.shape), f"stub identity {dt} dtype and shape")
    check(t.tensor_content == arr.tobytes(), f"stub identity {dt}: {t.tensor_content!r} vs {arr}")

status = model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
    model_spec={"name": "identity"}), metadata=md)
check([(s.version, s.state) for s in status.model_version_status] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)],
      f"stub status {status}")
mreq = get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "nsfw"}, metadata_field=["signature_def"])
meta = predict_stub.GetModelMetadata(mreq, metadata=md)
any_value = meta.metadata["signature_def"]
check(any_value.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap", f"stub metadata type: {any_value.type_url}")
# ovmsclient's copy of the messages lives in another proto package, so Any.Unpack
# (which compares type names) does not apply; parse the value as ovmsclient does.
sigs = get_model_metadata_pb2.SignatureDefMap()
sigs.ParseFromString(any_value.value)
sig = sigs.signature_def["serving_default"]
check(sig.inputs["input_0"].dtype == types_pb2.DT_FLOAT, f"stub metadata {sig}")


def grpc_error(fn, code, what):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: {e.code()} {e.details()}")
        return e.details()
    raise SystemExit(f"FAILED: {what}: no error")


grpc_error(lambda: predict_stub.Predict(request("nsfw", {"input_0": typed})),
           grpc.StatusCode.UNAUTHENTICATED, "stub without a token")
grpc_error(lambda: predict_stub.Predict(request("nosuch", {"input_0": typed}), metadata=md),
           grpc.StatusCode.NOT_FOUND, "stub unknown model")
wrong = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, tensor_shape=shape(x_nsfw.shape),
                               tensor_content=x_nsfw.tobytes())
grpc_error(lambda: predict_stub.Predict(request("nsfw", {"input_0": wrong}), metadata=md),
           grpc.StatusCode.INVALID_ARGUMENT, "stub dtype mismatch")
short = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape(x_nsfw.shape), float_val=[1.0])
grpc_error(lambda: predict_stub.Predict(request("nsfw", {"input_0": short}), metadata=md),
           grpc.StatusCode.INVALID_ARGUMENT, "stub too few values")
label = request("nsfw", {"input_0": typed})
label.model_spec.version_label = "stable"
grpc_error(lambda: predict_stub.Predict(label, metadata=md), grpc.StatusCode.INVALID_ARGUMENT, "stub version label")

# ------------------------------------------------------------ REST over HTTPS
base = f"https://localhost:{REST}/v1/models"
auth = {"Authorization": f"Bearer {TOKEN}"}


def get(path, **kw):
    return requests.get(f"{base}/{path}", headers=auth, verify=CA, timeout=60, **kw)


def post(path, body, headers=None):
    return requests.post(f"{base}/{path}", json=body, headers=auth if headers is None else headers,
                         verify=CA, timeout=60)


for path in ("nsfw", "nsfw/versions/1"):
    r = get(path)
    check(r.status_code == 200, f"REST status {path}: {r.status_code} {r.text}")
    check(r.json() == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                 "status": {"error_code": "OK", "error_message": "OK"}}]},
          f"REST status {path}: {r.text}")
r = get("blazeface/metadata")
check(r.status_code == 200, f"REST metadata: {r.status_code} {r.text}")
sig = r.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
check(sig["inputs"]["input"]["dtype"] == "DT_FLOAT", f"REST metadata dtype: {sig}")
check([int(d["size"]) for d in sig["inputs"]["input"]["tensor_shape"]["dim"]] == [1, 128, 128, 3], f"REST metadata shape: {sig}")
check(r.json()["model_spec"]["version"] == "1", f"REST metadata version: {r.text}")

# Row format, unnamed single input: one instance per batch item.
r = post("nsfw:predict", {"instances": x_nsfw.tolist()})
check(r.status_code == 200, f"REST row predict: {r.status_code} {r.text[:300]}")
close(np.array(r.json()["predictions"], np.float32), want_nsfw["4195"], "REST row nsfw")
# Columnar format, named input, explicit version.
r = post("nsfw/versions/1:predict", {"inputs": {"input_0": x_nsfw.tolist()}})
check(r.status_code == 200, f"REST columnar predict: {r.status_code} {r.text[:300]}")
close(np.array(r.json()["outputs"], np.float32), want_nsfw["4195"], "REST columnar nsfw")
# Two outputs: row answers carry each batch item's outputs by name, columnar by name.
r = post("blazeface:predict", {"instances": [{"input": x_face[0].tolist()}]})
check(r.status_code == 200, f"REST row blazeface: {r.status_code} {r.text[:300]}")
row = r.json()["predictions"][0]
for name, want in want_face.items():
    close(np.array(row[name], np.float32)[None, ...], want, f"REST row blazeface {name}")
r = post("blazeface:predict", {"inputs": {"input": x_face.tolist()}})
for name, want in want_face.items():
    close(np.array(r.json()["outputs"][name], np.float32), want, f"REST columnar blazeface {name}")
# JSON numbers into every identity input by its metadata's datatype.
r = post("identity:predict", {"inputs": {f"x_{dt}": arr.tolist() for dt, (arr, _, _) in IDENTITY.items()}})
check(r.status_code == 200, f"REST identity: {r.status_code} {r.text[:300]}")
for dt, (arr, _, _) in IDENTITY.items():
    got = np.array(r.json()["outputs"][f"x_{dt}"], dtype=arr.dtype)
    check(np.array_equal(got, arr), f"REST identity {dt}: {got} vs {arr}")

# Binary strings: only string inputs take them; here, a clear 400.
b64 = base64.b64encode(b"\x89PNG...").decode()
r = post("nsfw:predict", {"instances": [{"b64": b64}]})
check(r.status_code == 400 and "string inputs" in r.json().get("error", ""), f"REST b64 to a float input: {r.status_code} {r.text}")
# Errors in TFS's shape, statuses from the refusal table.
for (what, path, body, headers, status) in [
    ("no token", "nsfw:predict", {"instances": [[1.0]]}, {}, 401),
    ("unknown model", "nosuch:predict", {"instances": [[1.0]]}, None, 404),
    ("ragged", "nsfw:predict", {"inputs": [[1.0, 2.0], [3.0]]}, None, 400),
    ("both formats", "nsfw:predict", {"inputs": [1.0], "instances": [1.0]}, None, 400),
    ("wrong shape", "nsfw:predict", {"inputs": [[1.0, 2.0]]}, None, 400),
]:
    r = post(path, body, headers)
    check(r.status_code == status, f"REST {what}: {r.status_code} {r.text}")
    check(isinstance(r.json().get("error"), str), f"REST {what}: error shape {r.text}")
r = requests.get(f"{base}/nsfw", verify=CA, timeout=60)
check(r.status_code == 401 and "error" in r.json(), f"REST status without a token: {r.status_code}")

print(f"{checks} passed, 0 failed")
