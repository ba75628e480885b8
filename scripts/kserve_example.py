#!/usr/bin/env python3
"""Makes KServe v2 requests from real images, and computes the reference answer.

  request   MODEL IMAGE OUT.json   a KServe v2 JSON infer request for one of the demo
                                   models (nsfw, blazeface, light_resnet50) built from IMAGE
  reference MODEL_FILE REQ.json    runs REQ.json's inputs through OpenVINO's Python API,
                                   in process, with INFERENCE_PRECISION_HINT=f32, and
                                   prints {"outputs": {name: {"shape": [...], "data": [...]}}}

The reference is independent of Warden: another language binding, no server, no socket.
"""
import json
import sys

import numpy as np


def preprocess(model, image_path):
    from PIL import Image

    img = Image.open(image_path).convert("RGB")
    if model == "nsfw":
        # Open-NSFW: 224x224, BGR, minus the Caffe means, NHWC.
        a = np.asarray(img.resize((224, 224), Image.BILINEAR), dtype=np.float32)[:, :, ::-1]
        a = a - np.array([104.0, 117.0, 123.0], dtype=np.float32)
        return "input_0", a[None, ...]
    if model == "blazeface":
        a = np.asarray(img.resize((128, 128), Image.BILINEAR), dtype=np.float32) / 127.5 - 1.0
        return "input", a[None, ...]
    if model == "light_resnet50":
        a = np.asarray(img.resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255.0
        return "gpu_0/data_0", a.transpose(2, 0, 1)[None, ...]
    raise SystemExit(f"unknown demo model {model}")


def request(model, image_path, out_path):
    name, tensor = preprocess(model, image_path)
    tensor = np.ascontiguousarray(tensor, dtype=np.float32)
    body = {
        "id": f"example-{model}",
        "inputs": [
            {
                "name": name,
                "shape": list(tensor.shape),
                "datatype": "FP32",
                "data": [round(float(x), 6) for x in tensor.ravel()],
            }
        ],
    }
    with open(out_path, "w") as f:
        json.dump(body, f)
    # The raw form too, for binary-data clients.
    tensor.tofile(out_path + ".f32")


DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8}


def reference(model_file, req_path):
    import openvino as ov

    with open(req_path) as f:
        req = json.load(f)
    core = ov.Core()
    compiled = core.compile_model(model_file, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feed = {}
    for inp in req["inputs"]:
        arr = np.asarray(inp["data"], dtype=DTYPES[inp["datatype"]]).reshape(inp["shape"])
        feed[inp["name"]] = arr
    result = compiled(feed)
    out = {}
    for port, value in result.items():
        value = np.asarray(value)
        out[port.get_any_name()] = {"shape": list(value.shape), "data": value.ravel().astype(float).tolist()}
    json.dump({"outputs": out}, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "request":
        request(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "reference":
        reference(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
