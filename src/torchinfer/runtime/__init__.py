"""What runs a prepared batch besides eager PyTorch (frozen TorchScript, ONNX Runtime, reduced
precision), verified against float32 PyTorch; ``select.apply_backend`` chooses for a predictor."""
