"""The library ceiling for serving_bench.py: TF Serving's predict as a bare ASGI app, LiteRT + orjson.

    RAW_MODEL=model.tflite uvicorn benchmarks.raw_asgi_app:app --http httptools --loop uvloop --no-access-log

No validation, metrics or access log; batch of one sample per request; GET answers a health check.
"""

import os

import numpy as np
import orjson
from ai_edge_litert.interpreter import Interpreter

model = Interpreter(model_path=os.environ["RAW_MODEL"], num_threads=1)
model.allocate_tensors()
(inp,), (out,) = model.get_input_details(), model.get_output_details()
(in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):  # noqa: ANN001, ANN201
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    if scope["method"] == "GET":
        answer = b'{"status":"ok"}'
    else:
        x = np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
        if in_scale:
            x = np.round(x / in_scale + in_zero)
        model.set_tensor(inp["index"], x.astype(inp["dtype"]))
        model.invoke()
        y = model.get_tensor(out["index"])
        if out_scale:
            y = (y.astype(np.float32) - out_zero) * out_scale
        answer = orjson.dumps({"predictions": y}, option=orjson.OPT_SERIALIZE_NUMPY)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": answer})
