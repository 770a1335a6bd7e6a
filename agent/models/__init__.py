"""Model packages at serving time: find, verify, load and score them.

Owns: the on-disk repository layout (``repository``), loading and verifying a package and scoring a
batch with ONNX Runtime (``package``), the encoding of request features into the model's float32
matrix (``encoding``; it lives here because it is the manifest's feature schema applied) and a
numeric model's typed row decoder straight into it (``columnar``), the
dependency-version findings (``versions``), and the registry of served versions (``registry``).

May import: :mod:`agent.errors`, :mod:`schemas`. No scikit-learn, skl2onnx or matplotlib: those are
the ``build`` and ``demo`` extras.
"""

from __future__ import annotations

__all__: list[str] = []
