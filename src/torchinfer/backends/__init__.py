"""Runtimes other than PyTorch eager that a Predictor can run a model on.

Each backend module imports its runtime lazily and wraps a loaded model as an ``nn.Module`` with
the same call signature as the PyTorch model, so predictors need no backend-specific code:
``torchinfer.backends.onnxruntime`` (``make_session``, ``OrtModule``, ``load_onnx_model``).
Importing this package imports no runtime.
"""
