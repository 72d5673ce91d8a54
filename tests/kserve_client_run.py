"""KServe's own Python client against a torchinfer server; run in an environment of its own
(``make kserve-client`` makes ``.venv-kserve``: kserve pins protobuf < 7, which the Ray of the
main environment cannot run beside). It imports nothing of torchinfer.

    python tests/kserve_client_run.py HTTP_BASE GRPC_ADDRESS KEY IMAGE

prints one JSON object: per protocol (rest, grpc) and model (cls, seg) the outputs it read
as lists, and the errors it was answered for a wrong key and a broken image.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest
from kserve.inference_client import RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def request(model: str, image: bytes, binary: bool, parameters: dict | None = None
            ) -> InferRequest:
    tensor = InferInput("image", [1], "BYTES")
    # JSON cannot carry raw bytes: there the image goes base64, as the protocol's JSON form says
    element = image if binary else base64.b64encode(image)
    tensor.set_data_from_numpy(np.array([element], dtype=np.object_), binary_data=binary)
    outputs = [RequestedOutput("mask", {"binary_data": binary}), RequestedOutput("size")] \
        if model == "seg" else None
    return InferRequest(model_name=model, infer_inputs=[tensor], parameters=parameters,
                        request_outputs=outputs)


def read(response) -> dict:
    out = {}
    for tensor in response.outputs:
        if tensor.name == "record":
            continue
        array = tensor.as_numpy()
        out[tensor.name] = {"datatype": tensor.datatype, "shape": list(array.shape),
                            "values": [v.decode() if isinstance(v, bytes) else v
                                       for v in array.reshape(-1).tolist()]}
    return out


async def main(base: str, address: str, key: str, image_path: str) -> dict:
    image = open(image_path, "rb").read()
    found: dict = {"rest": {}, "grpc": {}, "errors": {}}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    for model in ("cls", "seg"):
        for binary in (False, True):
            # a fresh dict each call: the client writes its own headers into it
            answer = await rest.infer(base, request(model, image, binary), model_name=model,
                                      headers={"Authorization": f"Bearer {key}"})
            found["rest"][f"{model}/{'binary' if binary else 'json'}"] = read(answer)
    try:
        await rest.infer(base, request("cls", image, False), model_name="cls",
                         headers={"Authorization": "Bearer wrong-key-wrong-key"})
    except Exception as exc:  # noqa: BLE001  (kserve raises httpx's errors as they come)
        found["errors"]["rest key"] = str(exc)
    await rest.close()

    grpc = InferenceGRPCClient(address, retries=0)
    metadata = (("authorization", f"Bearer {key}"),)
    for model in ("cls", "seg"):
        answer = await grpc.infer(request(model, image, True), headers=metadata)
        found["grpc"][model] = read(answer)
    found["grpc"]["seg uint8"] = read(await grpc.infer(
        request("seg", image, True, {"mask_datatype": "UINT8"}), headers=metadata))
    for name, call in (("grpc key", request("cls", image, True)),
                       ("grpc broken image", request("cls", b"not a picture", True))):
        try:
            await grpc.infer(call, headers=metadata if "key" not in name else
                             (("authorization", "Bearer wrong-key-wrong-key"),))
        except Exception as exc:  # noqa: BLE001  (grpc.aio's AioRpcError)
            found["errors"][name] = f"{getattr(exc, 'code', lambda: '')()} {exc}"
    await grpc.close()
    return found


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:5]))))
