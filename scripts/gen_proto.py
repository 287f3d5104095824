#!/usr/bin/env python3
"""Regenerate common/pb/*_pb2.py and .pyi from the .proto files, or check they are current.

    python scripts/gen_proto.py          # write
    python scripts/gen_proto.py --check  # exit 1 if the committed code is stale

The generator is pinned (grpcio-tools in setup.cfg's dev extra) so the
output is reproducible.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PB = ROOT / "common" / "pb"


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in PB.glob("*.proto"))
    # mypy-protobuf (pinned in setup.cfg) writes the .pyi stubs mypy checks field names with.
    plugin = Path(sys.executable).with_name("protoc-gen-mypy")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--mypy_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def stale_files() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "common" / "pb"
        names = sorted(p.name for p in fresh.iterdir())
        committed = sorted(p.name for p in PB.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))
        stale = [
            n for n in names if not (PB / n).exists() or not filecmp.cmp(fresh / n, PB / n, shallow=False)
        ]
        stale += [n for n in committed if n not in names]
        return stale


def main() -> int:
    if "--check" in sys.argv:
        stale = stale_files()
        if stale:
            print("generated protobuf code is stale: " + ", ".join(stale) + "; run scripts/gen_proto.py")
            return 1
        print("generated protobuf code is current")
        return 0
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
