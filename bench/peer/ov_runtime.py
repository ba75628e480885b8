"""A small OpenVINO runtime for Seldon MLServer (the benchmark's peer).

MLServer has no maintained OpenVINO runtime (``mlserver-openvino`` stopped at
0.4.x, 2023), so this one does the minimum, the way an MLServer user would:

* reads the model file named by ``parameters.uri`` in ``model-settings.json``
  (ONNX, TFLite or OpenVINO IR ``.xml``; a folder is searched for
  ``model.xml``/``model.onnx``/``model.tflite``),
* compiles it for CPU with an OpenVINO plugin config given as a JSON object,
  the same one Warden takes with ``--plugin-config``
  (e.g. ``{"PERFORMANCE_HINT":"THROUGHPUT","INFERENCE_PRECISION_HINT":"f32"}``),
  from ``parameters.extra.plugin_config`` (object or JSON string) or else from
  the ``OV_PLUGIN_CONFIG`` environment variable; numbers become strings and
  booleans ``YES``/``NO``, as Warden does,
* runs requests on an ``openvino.AsyncInferQueue`` whose size is the compiled
  model's ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` (or ``parameters.extra.nireq``),
  awaiting each result through an asyncio future that the queue's callback
  completes with ``loop.call_soon_threadsafe``, so the event loop keeps
  serving while up to nireq inferences run,
* decodes inputs with MLServer's ``NumpyCodec`` (JSON ``data`` as well as gRPC
  ``raw_input_contents``, which MLServer unpacks into ``data`` before the
  model sees the request) and encodes outputs with ``NumpyCodec``.

Input and output names are the OpenVINO model's tensor names (as read, before
compiling), e.g. ``input`` for blazeface or ``gpu_0/data_0`` for ResNet-50.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import openvino as ov

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError, MLServerError
from mlserver.logging import logger
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    RequestInput,
)
from mlserver.utils import get_model_uri

ENV_PLUGIN_CONFIG = "OV_PLUGIN_CONFIG"
ENV_DEVICE = "OV_DEVICE"
ENV_TIMEOUT = "OV_INFER_TIMEOUT_S"
WELLKNOWN_FILENAMES = ["model.xml", "model.onnx", "model.tflite"]

# OpenVINO element type name -> (numpy dtype, KServe v2 datatype).
_OV_TYPES: Dict[str, Tuple[Any, str]] = {
    "boolean": (np.bool_, "BOOL"),
    "u8": (np.uint8, "UINT8"),
    "u16": (np.uint16, "UINT16"),
    "u32": (np.uint32, "UINT32"),
    "u64": (np.uint64, "UINT64"),
    "i8": (np.int8, "INT8"),
    "i16": (np.int16, "INT16"),
    "i32": (np.int32, "INT32"),
    "i64": (np.int64, "INT64"),
    "f16": (np.float16, "FP16"),
    "f32": (np.float32, "FP32"),
    "f64": (np.float64, "FP64"),
}


def _plugin_value(value: Any) -> str:
    """Same rule as Warden's ``plugin_value_to_string``."""
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ValueError(f"plugin_config value {value!r} is not a string or number")


def parse_plugin_config(raw: Any) -> Dict[str, str]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, dict):
        raise ValueError("plugin config is not a JSON object")
    return {str(k): _plugin_value(v) for k, v in raw.items()}


def _shape_of(partial: "ov.PartialShape") -> List[int]:
    return [d.get_length() if d.is_static else -1 for d in partial]


class _Port:
    __slots__ = ("index", "name", "dtype", "datatype", "partial_shape")

    def __init__(self, index: int, port: Any):
        self.index = index
        self.name = port.get_any_name()
        et = port.get_element_type().get_type_name()
        self.dtype, self.datatype = _OV_TYPES.get(et, (None, et.upper()))
        self.partial_shape = port.get_partial_shape()


class OpenVINORuntime(MLModel):
    async def load(self) -> bool:
        params = self.settings.parameters
        extra: Dict[str, Any] = dict((params.extra if params else None) or {})

        path = await get_model_uri(self.settings, wellknown_filenames=WELLKNOWN_FILENAMES)
        if os.path.isdir(path):
            raise MLServerError(f"no model.xml/.onnx/.tflite in {path}")

        if "plugin_config" in extra:
            config = parse_plugin_config(extra["plugin_config"])
        else:
            config = parse_plugin_config(os.environ.get(ENV_PLUGIN_CONFIG))
        device = str(extra.get("device") or os.environ.get(ENV_DEVICE) or "CPU")
        self._timeout = float(extra.get("infer_timeout_s") or os.environ.get(ENV_TIMEOUT) or 120)

        core = ov.Core()
        model = core.read_model(path)
        # Names, types and shapes as read (compiling may add internal names).
        self._inputs = [_Port(i, p) for i, p in enumerate(model.inputs)]
        self._outputs = [_Port(i, p) for i, p in enumerate(model.outputs)]
        self._input_by_name: Dict[str, _Port] = {}
        for port, ov_port in zip(self._inputs, model.inputs):
            for name in ov_port.get_names():
                self._input_by_name[name] = port
        self._output_by_name = {p.name: p for p in self._outputs}

        self._compiled = core.compile_model(model, device, config)
        nireq = int(extra.get("nireq") or 0)
        if nireq <= 0:
            nireq = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._nireq = max(1, nireq)
        self._queue = ov.AsyncInferQueue(self._compiled, self._nireq)
        self._queue.set_callback(self._on_done)
        # start_async blocks the calling thread while every request is busy:
        # gate it so the event loop never waits there.
        self._slots = asyncio.Semaphore(self._nireq)
        self._n_out = len(self._outputs)

        # Publish metadata (GET /v2/models/<name>) from the model itself.
        self.inputs = [
            MetadataTensor(name=p.name, datatype=p.datatype, shape=_shape_of(p.partial_shape))
            for p in self._inputs
        ]
        self.outputs = [
            MetadataTensor(name=p.name, datatype=p.datatype, shape=_shape_of(p.partial_shape))
            for p in self._outputs
        ]
        logger.info(
            "openvino %s: loaded %s on %s, nireq=%d, config=%s",
            ov.__version__, path, device, self._nireq, config,
        )
        return True

    async def unload(self) -> bool:
        queue = getattr(self, "_queue", None)
        if queue is not None:
            await asyncio.get_running_loop().run_in_executor(None, queue.wait_all)
        return True

    # Runs on an OpenVINO thread.
    def _on_done(self, request: "ov.InferRequest", userdata: Any) -> None:
        loop, future, _feeds = userdata  # _feeds: shared inputs stay alive until here
        try:
            # Copy: the request's tensors are reused by the next inference.
            result: Any = [
                np.array(request.get_output_tensor(i).data, copy=True)
                for i in range(self._n_out)
            ]
        except BaseException as e:  # pragma: no cover - reported to the caller
            result = e
        loop.call_soon_threadsafe(_resolve, future, result)

    def _decode(self, request_input: RequestInput, port: _Port) -> np.ndarray:
        array = self.decode(request_input, default_codec=NumpyCodec)
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
        if port.dtype is not None and array.dtype != port.dtype:
            if request_input.datatype != port.datatype:
                raise InferenceError(
                    f"input {request_input.name}: datatype {request_input.datatype}, "
                    f"model wants {port.datatype}"
                )
            array = array.astype(port.dtype)
        if not port.partial_shape.compatible(ov.PartialShape(list(array.shape))):
            raise InferenceError(
                f"input {request_input.name}: shape {list(array.shape)}, "
                f"model wants {port.partial_shape}"
            )
        return np.ascontiguousarray(array)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds: Dict[int, np.ndarray] = {}
        for request_input in payload.inputs:
            port = self._input_by_name.get(request_input.name)
            if port is None:
                raise InferenceError(f"model {self.name} has no input {request_input.name!r}")
            feeds[port.index] = self._decode(request_input, port)
        if len(feeds) != len(self._inputs):
            missing = [p.name for p in self._inputs if p.index not in feeds]
            raise InferenceError(f"missing inputs: {missing}")

        wanted: Optional[List[str]] = None
        if payload.outputs:
            wanted = [o.name for o in payload.outputs]
            for name in wanted:
                if name not in self._output_by_name:
                    raise InferenceError(f"model {self.name} has no output {name!r}")

        loop = asyncio.get_running_loop()
        async with self._slots:
            future = loop.create_future()
            self._queue.start_async(feeds, (loop, future, feeds), share_inputs=True)
            result = await asyncio.wait_for(future, self._timeout)
        if isinstance(result, BaseException):
            raise InferenceError(f"inference failed: {result}")

        outputs = []
        for port in self._outputs:
            if wanted is not None and port.name not in wanted:
                continue
            array = result[port.index]
            out = NumpyCodec.encode_output(port.name, array)
            out.shape = list(array.shape)  # NumpyCodec pads 1-D shapes to [N, 1]
            outputs.append(out)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=outputs,
        )


def _resolve(future: "asyncio.Future", result: Any) -> None:
    if not future.done():  # it may have timed out
        future.set_result(result)
