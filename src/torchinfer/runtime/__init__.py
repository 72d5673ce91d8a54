"""What runs a prepared batch: a registry of backends (eager PyTorch, frozen TorchScript, ONNX
Runtime, OpenVINO, plugins), each verified against float32 PyTorch before it is trusted;
``select.choose_runtime`` makes the measured, remembered choice for a predictor."""
