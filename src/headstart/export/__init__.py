"""Export a trained run as one self-describing file, and run or serve it.

Modules, from the bottom up (each imports only those above it):

- ``inputs`` (numpy; no torch): per modality, how user items (image files; raw strings or .txt
  files) become the model's input arrays and how an HTTP ``/predict`` request is read; looked
  up by the modality the export metadata names (none: images).
- ``predictor`` (onnxruntime only): ``open_export("model.onnx").predict(items, top_k)``;
  ``TorchScriptPredictor`` for ``.pt`` files (torch).
- ``wrapper`` / ``signatures`` (torch): per modality, the exported module (uint8 images or
  token ids in, probabilities and logits out), sample inputs, dynamic axes, metadata fields,
  side files (a text model's ``<name>.tokenizer.json``) and model card lines.
- ``exporter`` (torch): ``export_model(run, "onnx" | "torchscript")`` for every modality: one
  metadata builder, one model card, the export-time equality check against the eager model.
- ``run_predictor`` (torch): a run folder behind the predictor interface.
- ``serve`` (FastAPI): ``/health``, ``/metadata`` and ``/predict`` over any of them.
"""
