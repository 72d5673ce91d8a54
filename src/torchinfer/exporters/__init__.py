"""Export to ONNX and TorchScript with the model card embedded, and verification that the
file computes what PyTorch computes. (Not ``export``: ``torchinfer.export`` is the function.)

    onnx.py          export_onnx (and the public names: ExportReport, ExportError, ...)
    torchscript.py   export_torchscript
    detectors.py     torchvision detectors: one image in, boxes/labels/scores out
    common.py        errors, ExportReport, graph names, the exported card, tracing helpers
    prepare.py       the module to trace, its task, input size, dummy input, tolerance
    files.py         writing the file with its card, moving it into place or aside
    verification.py  comparing the file with PyTorch on photographs
"""
