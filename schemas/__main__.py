"""Writes every driftline schema as JSON Schema: ``python -m schemas [OUTPUT_DIR]``.

The committed copies live in ``schemas/json/``; a test keeps them equal to the models.
"""

from __future__ import annotations

import sys
from pathlib import Path

from schemas import export_json_schemas

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "json"
    for path in export_json_schemas(out):
        print(path)
