"""The model as the stages share it: the ONNX runtime and its input layout, artefacts and their
sha256, deployment records, the registry look-up and the CBPE estimator.

It imports only :mod:`streamflow.core` and :mod:`streamflow.db`; no stage."""
