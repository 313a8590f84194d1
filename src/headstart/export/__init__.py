"""Export: one file that takes uint8 images and carries its preprocessing, labels and metadata.

``exporter`` (needs torch) writes ONNX/TorchScript; ``predictor`` runs an ONNX export with
onnxruntime only.
"""
