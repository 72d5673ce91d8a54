"""Export to ONNX and TorchScript with the model card embedded, and verification that the file computes what PyTorch computes. (Not ``export``: ``torchinfer.export`` is the function.)"""
