"""Refusals sent before the client has finished uploading, read by real clients.

Usage: early_answers.py REST_PORT GRPC_PORT CA TOKEN BODY_BYTES

For each client (curl over HTTP/1.1 and HTTP/2, httpx over HTTP/1.1 and HTTP/2,
tritonclient HTTP and gRPC) it sends an inference whose body is BODY_BYTES long:
without a credential (expects 401 / UNAUTHENTICATED) and with one, over the body cap
(expects 413 / RESOURCE_EXHAUSTED). Prints one JSON object: {case: what was seen}.
"""

import json
import subprocess
import sys
import tempfile

import httpx
import numpy as np

rest_port, grpc_port, ca, token, size = sys.argv[1:6]
size = int(size)
url = f"https://localhost:{rest_port}/v2/models/addn/infer"
seen = {}


def body_file():
    f = tempfile.NamedTemporaryFile(delete=False, suffix=".json")
    head = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
    f.write(head + b" " * (size - len(head)))
    f.close()
    return f.name


path = body_file()
body = open(path, "rb").read()

for label, auth in [("unauthenticated", None), ("oversized", token)]:
    for version in ["--http1.1", "--http2"]:
        args = ["curl", "-sS", "--max-time", "20", version, "--cacert", ca,
                "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", f"@{path}",
                "-H", "content-type: application/json"]
        if auth:
            args += ["-H", f"authorization: Bearer {auth}"]
        p = subprocess.run(args + [url], capture_output=True, text=True, timeout=30)
        seen[f"curl {version[2:]} {label}"] = f"{p.stdout.strip()} exit {p.returncode}"
    for http2 in [False, True]:
        try:
            with httpx.Client(verify=ca, http1=not http2, http2=http2, timeout=20) as c:
                headers = {"authorization": f"Bearer {auth}"} if auth else {}
                r = c.post(url, content=body, headers=headers)
                seen[f"httpx {'2' if http2 else '1.1'} {label}"] = f"{r.status_code} {r.http_version}"
        except Exception as e:  # the failure itself is what the test reports
            seen[f"httpx {'2' if http2 else '1.1'} {label}"] = f"error {type(e).__name__}: {e}"

# tritonclient: a real tensor as large as the body, binary over HTTP, raw over gRPC.
import gevent.ssl  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402

x = np.zeros((1, size // 4), dtype=np.float32)
for label, auth in [("unauthenticated", None), ("oversized", token)]:
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    try:
        c = httpclient.InferenceServerClient(
            f"localhost:{rest_port}", ssl=True, ssl_options={"ca_certs": ca},
            ssl_context_factory=gevent.ssl.create_default_context, network_timeout=20)
        i = httpclient.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=True)
        # (tritonclient.http adds its own entries to the dict it is given)
        c.infer("addn", [i], headers=dict(headers))
        seen[f"tritonclient http {label}"] = "served"
    except Exception as e:
        seen[f"tritonclient http {label}"] = f"{getattr(e, 'status', lambda: None)()} {e}"
    try:
        c = grpcclient.InferenceServerClient(
            f"localhost:{grpc_port}", ssl=True, root_certificates=ca)
        i = grpcclient.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        c.infer("addn", [i], headers={k.lower(): v for k, v in headers.items()}, client_timeout=20)
        seen[f"tritonclient grpc {label}"] = "served"
    except Exception as e:
        seen[f"tritonclient grpc {label}"] = f"{e.status() if hasattr(e, 'status') else ''} {e}"

print(json.dumps(seen))
