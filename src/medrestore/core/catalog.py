"""What ``medrestore models`` lists, without importing torch or building a network.

The registry (:mod:`medrestore.models`: ``MODELS`` and ``BASELINES``) is the truth; listing it means
importing torch and building every network to count its parameters, seconds for a table that changes
only with the models' source. So the table is kept, with the md5 of that source, in
``models_catalog.json`` beside this module (shipped in the wheel), and :func:`rows` reads it while the
md5 matches ``src/medrestore/models/*.py``; when it does not (a model added or changed and the file not
regenerated), :func:`rows` asks the registry itself, as before: slower, never wrong.

    python -m medrestore.core.catalog --write     # after changing a model (tests/test_cli.py checks it is current)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

CATALOG = Path(__file__).parent.parent / "models_catalog.json"
MODELS_DIR = Path(__file__).parent.parent / "models"


def source_md5(models_dir: Path = MODELS_DIR) -> str:
    """md5 of every ``*.py`` of the models package (relative name and bytes, in name order)."""
    h = hashlib.md5()
    for path in sorted(models_dir.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def from_registry() -> list[dict]:
    """The rows from the registry: each network class built once with its default arguments (several
    names share one network), its trainable parameters counted; baselines have none."""
    from medrestore.models import BASELINES, MODELS, build_model, count_parameters

    counts: dict[type, int] = {}
    rows = []
    for name, spec in MODELS.items():
        if spec.cls not in counts:
            counts[spec.cls] = count_parameters(build_model(name))
        rows.append({"name": name, "kind": "network", "task": spec.task, "parameters": counts[spec.cls],
                     "paper": spec.paper})
    rows += [
        {"name": n, "kind": "baseline", "task": getattr(f, "task", "denoise"), "parameters": 0,
         "paper": getattr(f, "paper", None) or (f.__doc__ or "").strip().splitlines()[0]}
        for n, f in BASELINES.items()
    ]
    return rows


def rows(catalog: Path = CATALOG, models_dir: Path = MODELS_DIR) -> list[dict]:
    """The catalog's rows when it describes the models' current source, else the registry's."""
    try:
        saved = json.loads(catalog.read_text())
    except (OSError, ValueError):
        saved = {}
    if saved.get("models_md5") == source_md5(models_dir) and isinstance(saved.get("rows"), list):
        return saved["rows"]
    return from_registry()


def write(catalog: Path = CATALOG) -> dict:
    """Regenerate the catalog from the registry (byte-identical when nothing changed)."""
    from medrestore.core.io import write_json_atomic

    content = {"models_md5": source_md5(), "rows": from_registry()}
    write_json_atomic(catalog, content)
    return content


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medrestore.core.catalog", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"regenerate {CATALOG.name} from the registry")
    args = parser.parse_args(argv)
    if args.write:
        content = write()
        print(f"{CATALOG}: {len(content['rows'])} models")
        return 0
    current = json.loads(CATALOG.read_text()).get("models_md5") == source_md5() if CATALOG.is_file() else False
    print(f"{CATALOG}: {'current' if current else 'stale: run python -m medrestore.core.catalog --write'}")
    return 0 if current else 1


if __name__ == "__main__":
    sys.exit(main())
