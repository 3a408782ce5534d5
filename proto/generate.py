"""Generate the Python modules for proto/*.proto into service/grpc_frontend/generated/.

    python proto/generate.py            # write the generated modules
    python proto/generate.py --out DIR  # write them elsewhere (tests compare the two)

protoc writes `import model_config_pb2`, which only works with the folder on sys.path; the
imports are rewritten to relative ones so the modules live inside the `service` package.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_DIR.parent / "service" / "grpc_frontend" / "generated"
PROTO_FILES = ["model_config.proto", "grpc_service.proto"]


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # a dev tool: only needed to regenerate

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(PROTO_DIR / name) for name in PROTO_FILES],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = sorted(p for p in out_dir.iterdir() if p.suffix in {".py", ".pyi"})
    for path in written:
        text = path.read_text()
        text = re.sub(r"^import (\w+_pb2) as ", r"from . import \1 as ", text, flags=re.M)
        path.write_text(text)
    note = '"""Generated from proto/ by proto/generate.py; do not edit."""\n'
    (out_dir / "__init__.py").write_text(note)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
