#!/usr/bin/env python3
"""Builds small OpenVINO IR models for protocol tests, with OpenVINO's own Python ops.

  .models/identity/1/model.xml   one input per KServe datatype, each returned unchanged
                                 (input and output both named x_<DT>, shape [-1, 4]);
                                 Parameter straight to Result, so the CPU plugin moves
                                 the bytes without computing in a narrower type
  .models/addn/1/model.xml       y = x + 1  (FP32 [1,4])  } two versions of one model,
  .models/addn/2/model.xml       y = x + 2  (FP32 [1,4])  } to tell which one answered
"""
import os
import sys

import numpy as np
import openvino as ov
import openvino.opset13 as ops

TYPES = {
    "BOOL": ov.Type.boolean, "UINT8": ov.Type.u8, "UINT16": ov.Type.u16, "UINT32": ov.Type.u32,
    "UINT64": ov.Type.u64, "INT8": ov.Type.i8, "INT16": ov.Type.i16, "INT32": ov.Type.i32,
    "INT64": ov.Type.i64, "FP16": ov.Type.f16, "BF16": ov.Type.bf16, "FP32": ov.Type.f32,
    "FP64": ov.Type.f64,
}


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ov.save_model(model, path, compress_to_fp16=False)
    for f in (path, path[:-4] + ".bin"):
        os.chmod(f, 0o644)
    print("test model", path)


def identity(root):
    params, results = [], []
    for name, ty in TYPES.items():
        p = ops.parameter([-1, 4], ty, name=f"x_{name}")
        p.output(0).get_tensor().set_names({f"x_{name}"})
        params.append(p)
        results.append(ops.result(p))
    save(ov.Model(results, params, "identity"), f"{root}/identity/1/model.xml")


def addn(root, n):
    p = ops.parameter([1, 4], ov.Type.f32, name="x")
    p.output(0).get_tensor().set_names({"x"})
    y = ops.add(p, ops.constant(np.full([1, 4], n, dtype=np.float32)))
    y.output(0).get_tensor().set_names({"y"})
    save(ov.Model([ops.result(y)], [p], f"add{n}"), f"{root}/addn/{n}/model.xml")


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else ".models"
    identity(root)
    addn(root, 1)
    addn(root, 2)
