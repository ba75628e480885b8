"""gRPC message cap: a ModelInfer message of exactly `max_grpc_message_bytes` is
served, one byte more is RESOURCE_EXHAUSTED, and a far larger one too.

    grpc_limits.py PORT CA_PEM TOKEN MAX_BYTES

Prints one JSON object with the code (and the answer) for each size.
"""

import json
import struct
import sys

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

port, ca, token, cap = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])


def request_of_size(size):
    """An addn [1,4] request padded (in a request parameter, which is not echoed) to
    exactly `size` encoded bytes."""
    req = service_pb2.ModelInferRequest(model_name="addn")
    t = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    del t
    req.raw_input_contents.append(struct.pack("<4f", 1.0, 2.0, 3.0, 4.0))
    pad = max(0, size - req.ByteSize() - 16)
    for _ in range(8):
        req.parameters["pad"].string_param = "p" * pad
        diff = size - req.ByteSize()
        if diff == 0:
            return req
        pad += diff
    raise SystemExit(f"cannot pad to {size}")


creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
opts = [
    ("grpc.ssl_target_name_override", "localhost"),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
out = {}
with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=opts) as ch:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
    md = [("authorization", "Bearer " + token)]
    for label, size in (("at_cap", cap), ("one_over", cap + 1), ("far_over", cap * 64)):
        req = request_of_size(size)
        assert req.ByteSize() == size
        try:
            r = stub.ModelInfer(req, metadata=md, timeout=20)
            y = list(struct.unpack("<4f", r.raw_output_contents[0]))
            out[label] = {"code": "OK", "size": size, "y": y}
        except grpc.RpcError as e:
            out[label] = {"code": e.code().name, "size": size, "details": e.details()}
print(json.dumps(out))
