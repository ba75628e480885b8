#!/usr/bin/env python3
"""Drives a running Warden with Triton's own clients (tritonclient over HTTPS and
gRPC+TLS, with bearer tokens) through Triton's extensions: model configuration,
statistics, repository index, load/unload and log settings; and with gRPC's own
health client (grpcio-health-checking) through grpc.health.v1 Check and Watch, and
grpcio-reflection's client through server reflection (services, files, and an
inference built from the reflected descriptors alone).
Exits non-zero on the first failed check.

usage: triton_extensions.py REST_PORT GRPC_PORT CA_PEM USER_TOKEN ADMIN_TOKEN CONTROL
  USER_TOKEN may infer, read metadata, config and stats of `addn` and `nsfw` (not
  `identity`, which the server also serves); ADMIN_TOKEN is
  granted `admin`; CONTROL is `on` or `off` (triton.repository_control).
"""
import sys

import gevent.ssl
import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.utils import InferenceServerException

REST, GRPC, CA, USER, ADMIN, CONTROL = sys.argv[1:7]
MODEL = "addn"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


def expect_error(fn, wanted, what):
    try:
        fn()
    except InferenceServerException as e:
        text = f"{e.status()} {e}"
        check(all(w in text for w in wanted), f"{what}: got {text}")
        return
    raise SystemExit(f"FAILED: {what}: no error")


def hdr(token):
    return {"Authorization": f"Bearer {token}"}


def ghdr(token):
    return {"authorization": f"Bearer {token}"}


h = httpclient.InferenceServerClient(
    url=f"localhost:{REST}", ssl=True, ssl_options={"ca_certs": CA},
    ssl_context_factory=gevent.ssl.create_default_context,
)
g = grpcclient.InferenceServerClient(url=f"localhost:{GRPC}", ssl=True, root_certificates=CA)

# Server metadata names the extensions.
for meta in (h.get_server_metadata(headers=hdr(USER)), g.get_server_metadata(headers=ghdr(USER), as_json=True)):
    check({"model_configuration", "statistics", "model_repository", "logging"} <= set(meta["extensions"]),
          f"server metadata extensions {meta}")

# Model configuration, from the model's metadata.
for cfg in (h.get_model_config(MODEL, headers=hdr(USER)),
            g.get_model_config(MODEL, headers=ghdr(USER), as_json=True)["config"]):
    check(cfg["name"] == MODEL, f"config name {cfg}")
    check(cfg["platform"] == "OpenVINO" and cfg["backend"] == "openvino", f"config platform {cfg}")
    check(int(cfg.get("max_batch_size", 0)) == 0, f"config max_batch_size {cfg}")
    check([i["name"] for i in cfg["input"]] == ["x"], f"config inputs {cfg}")
    check(cfg["input"][0]["data_type"] == "TYPE_FP32", f"config input type {cfg}")
    check([int(d) for d in cfg["input"][0]["dims"]] == [1, 4], f"config input dims {cfg}")
    check(cfg["output"][0]["data_type"] == "TYPE_FP32", f"config output type {cfg}")
cfg = h.get_model_config(MODEL, model_version="1", headers=hdr(USER))
check(cfg["name"] == MODEL, "config of version 1")

# Statistics count the inferences made.
x = np.array([[1, 2, 3, 4]], dtype=np.float32)
before = h.get_inference_statistics(MODEL, model_version="2", headers=hdr(USER))["model_stats"][0]
n = 3
for _ in range(n):
    i = httpclient.InferInput("x", [1, 4], "FP32")
    i.set_data_from_numpy(x)
    r = h.infer(MODEL, [i], model_version="2", headers=hdr(USER))
    check(r.as_numpy(r.get_response()["outputs"][0]["name"]).tolist() == [[3, 4, 5, 6]], "addn v2 answers")
gi = grpcclient.InferInput("x", [1, 4], "FP32")
gi.set_data_from_numpy(x)
g.infer(MODEL, [gi], model_version="2", headers=ghdr(USER))
after = h.get_inference_statistics(MODEL, model_version="2", headers=hdr(USER))["model_stats"][0]
s0, s1 = before["inference_stats"], after["inference_stats"]
check(after["name"] == MODEL and after["version"] == "2", f"stats names {after}")
check(int(s1["success"]["count"]) - int(s0["success"]["count"]) == n + 1, f"stats success count {s0} -> {s1}")
check(int(s1["success"]["ns"]) > int(s0["success"]["ns"]), "stats success ns grows")
check(int(s1["compute_infer"]["ns"]) > int(s0["compute_infer"]["ns"]), "stats compute_infer ns grows")
check(int(s1["queue"]["count"]) - int(s0["queue"]["count"]) == n + 1, f"stats queue count {s0} -> {s1}")
check(int(after["inference_count"]) >= n + 1 and int(after["last_inference"]) > 0, f"stats counts {after}")
gs = g.get_inference_statistics(MODEL, headers=ghdr(USER), as_json=True)["model_stats"]
check({m["version"] for m in gs} == {"1", "2"}, f"grpc stats of every version {gs}")
v2 = [m for m in gs if m["version"] == "2"][0]
check(int(v2["inference_stats"]["success"]["count"]) == int(s1["success"]["count"]), "grpc and REST stats agree")
# Without a model: only the models the caller may read statistics of.
every = h.get_inference_statistics(headers=hdr(USER))["model_stats"]
check({m["name"] for m in every} == {MODEL, "nsfw"}, f"stats of every allowed model (not identity) {every}")

# Repository index: an admin operation.
for idx in (h.get_model_repository_index(headers=hdr(ADMIN)),
            g.get_model_repository_index(headers=ghdr(ADMIN), as_json=True)["models"]):
    names = {(m["name"], m.get("version", ""), m.get("state", "")) for m in idx}
    check((MODEL, "2", "READY") in names and ("nsfw", "1", "READY") in names, f"repository index {idx}")
expect_error(lambda: h.get_model_repository_index(headers=hdr(USER)), ["403"], "REST index as a user")
expect_error(lambda: g.get_model_repository_index(headers=ghdr(USER)), ["PERMISSION_DENIED"], "gRPC index as a user")

# Load and unload: refused as disabled when off; when on, refused as not supported
# (the backend cannot load or unload on request).
if CONTROL == "off":
    want_rest, want_grpc, word = "403", "PERMISSION_DENIED", "disabled"
else:
    want_rest, want_grpc, word = "501", "UNIMPLEMENTED", "cannot load or unload"
for op in ("load_model", "unload_model"):
    expect_error(lambda: getattr(h, op)(MODEL, headers=hdr(ADMIN)), [want_rest, word], f"REST {op} ({CONTROL})")
    expect_error(lambda: getattr(g, op)(MODEL, headers=ghdr(ADMIN)), [want_grpc, word], f"gRPC {op} ({CONTROL})")
    expect_error(lambda: getattr(h, op)(MODEL, headers=hdr(USER)), ["403"], f"REST {op} as a user")
check(h.is_model_ready(MODEL, headers=hdr(USER)), "the model still serves")

# Log settings: the gateway's filter (WARDEN_LOG=info), read-only.
for logs in (h.get_log_settings(headers=hdr(ADMIN)),
             g.get_log_settings(headers=ghdr(ADMIN), as_json=True)["settings"]):
    flat = {k: (v if not isinstance(v, dict) else list(v.values())[0]) for k, v in logs.items()}
    check(flat["log_info"] is True and flat["log_error"] is True, f"log settings {logs}")
    check(int(flat["log_verbose_level"]) == 0, f"log verbose level {logs}")
expect_error(lambda: h.update_log_settings({"log_info": False}, headers=hdr(ADMIN)), ["501", "read-only"],
             "REST log settings change")
expect_error(lambda: g.update_log_settings({"log_info": False}, headers=ghdr(ADMIN)), ["UNIMPLEMENTED", "read-only"],
             "gRPC log settings change")
expect_error(lambda: h.get_log_settings(headers=hdr(USER)), ["403"], "REST log settings as a user")

# grpc.health.v1: the server's names without a credential, a model's with one.
with open(CA, "rb") as f:
    channel = grpc.secure_channel(f"localhost:{GRPC}", grpc.ssl_channel_credentials(f.read()))
health = health_pb2_grpc.HealthStub(channel)
SERVING = health_pb2.HealthCheckResponse.SERVING
for name in ("", "inference.GRPCInferenceService"):
    check(health.Check(health_pb2.HealthCheckRequest(service=name)).status == SERVING, f"health {name!r}")
try:
    health.Check(health_pb2.HealthCheckRequest(service=MODEL))
    raise SystemExit("FAILED: a model's health without a credential")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.UNAUTHENTICATED, f"model health without a credential: {e.code()}")
meta = [("authorization", f"Bearer {USER}")]
check(health.Check(health_pb2.HealthCheckRequest(service=MODEL), metadata=meta).status == SERVING, "model health")
try:
    health.Check(health_pb2.HealthCheckRequest(service="identity"), metadata=meta)
    raise SystemExit("FAILED: health of a model not granted")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.PERMISSION_DENIED, f"health of a model not granted: {e.code()}")
watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
check(next(watch).status == SERVING, "watch: first status")
watch.cancel()
check(health.Check(health_pb2.HealthCheckRequest(service="")).status == SERVING, "health after a cancelled watch")

# Server reflection (grpcio-reflection's client, v1alpha): authenticated by default.
class Details(grpc.ClientCallDetails):
    """A call's details with the bearer token added to its metadata."""

    def __init__(self, d):
        self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
        self.wait_for_ready, self.compression = d.wait_for_ready, d.compression
        self.metadata = list(d.metadata or []) + [("authorization", f"Bearer {USER}")]


class Auth(grpc.StreamStreamClientInterceptor, grpc.UnaryUnaryClientInterceptor):
    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(Details(details), requests)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(Details(details), request)


try:
    list(ProtoReflectionDescriptorDatabase(channel).get_services())
    raise SystemExit("FAILED: reflection without a credential")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.UNAUTHENTICATED, f"reflection without a credential: {e.code()}")
authed = grpc.intercept_channel(channel, Auth())
db = ProtoReflectionDescriptorDatabase(authed)
services = set(db.get_services())
check({"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services, f"reflected services {services}")
pool = descriptor_pool.DescriptorPool(db)
svc = pool.FindServiceByName("inference.GRPCInferenceService")
methods = {m.name for m in svc.methods}
check({"ModelInfer", "ModelConfig", "ModelStatistics", "RepositoryIndex", "LogSettings"} <= methods, f"reflected methods {methods}")
check(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse") is not None, "health messages reflected")
# An inference built only from the reflected descriptors.
infer = svc.FindMethodByName("ModelInfer")
Req = message_factory.GetMessageClass(infer.input_type)
Resp = message_factory.GetMessageClass(infer.output_type)
req = Req(model_name=MODEL, model_version="2")
t = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
t.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
call = authed.unary_unary(f"/{svc.full_name}/ModelInfer", request_serializer=Req.SerializeToString,
                          response_deserializer=Resp.FromString)
resp = call(req)
y = np.frombuffer(resp.raw_output_contents[0], dtype=np.float32).tolist()
check(y == [3.0, 4.0, 5.0, 6.0], f"infer from reflected descriptors: {y}")

print(f"{checks} passed, 0 failed")
