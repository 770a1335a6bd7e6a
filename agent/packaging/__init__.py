"""Packaging: build a verified model package (ONNX + manifest) from a trained model.

One module per step, each a plain function a test can call on its own: ``training`` (what a training
module returns, and loading it), ``convert`` (to ONNX, and the hyperparameters), ``parity`` (ONNX
Runtime agrees with the original), ``reference`` (reference statistics and holdout scores), ``write``
(atomic write, build versions), ``calibration`` (a classifier's confidence against its correctness
on the holdout), ``importance`` (each feature's permutation importance to the output) and
``reconstruction`` (the numeric features' PCA, for multivariate drift); ``builder``
runs them in order with ``progress`` on stderr;
``boosting`` registers onnxmltools' converters for XGBoost and LightGBM models; ``examples`` holds
the bundled example models. A model that arrives as an ONNX file goes through ``onnx_import``
instead, with its data read by ``csv_reference``.

Needs the ``build`` extra (scikit-learn, skl2onnx, onnx; XGBoost, LightGBM, onnxmltools):
``pip install 'driftline[build]'``. Outside the worker's import graph.

May import: :mod:`agent.models`, :mod:`agent.errors`, :mod:`schemas`.
"""

from __future__ import annotations

__all__: list[str] = []
