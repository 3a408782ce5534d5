"""Generate the Python modules for proto/*.proto into zooserve/protocol/generated/.

    python proto/generate.py            # write the generated modules
    python proto/generate.py --out DIR  # write them elsewhere (tests compare the two)

protoc writes `import model_config_pb2`, which only works with the folder on sys.path; the
imports are rewritten to relative ones so the modules live inside the `zooserve.protocol` package.

protoc's modules register their files in protobuf's default descriptor pool, where
tritonclient's generated modules register the same file names and `inference.*` messages:
whichever is imported second fails ("duplicate file name model_config.proto"). So the
modules are rewritten to register in zooserve's own pool (`POOL` in the package's
`__init__.py`) instead, and tritonclient and zooserve can be imported in one process. gRPC
stubs need only each message class's serializer and parser, which do not care which pool
holds the descriptor.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_DIR.parent / "zooserve" / "protocol" / "generated"
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
        if path.name.endswith("_pb2.py"):
            text = _private_pool(path, text)
        path.write_text(text)
    (out_dir / "__init__.py").write_text(PACKAGE_INIT)
    return written


PACKAGE_INIT = '''"""Generated from proto/ by proto/generate.py; do not edit.

The modules register their descriptors in POOL, zooserve's own descriptor pool, not in
protobuf's default one, where tritonclient registers the same files: so both can be
imported in one process."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
'''

DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
IMPORTS_END = "# @@protoc_insertion_point(imports)\n"


def _private_pool(path: Path, text: str) -> str:
    """A *_pb2.py module that adds its file to the package's POOL instead of the default
    pool. Refuses a module not laid out as expected rather than leave it in the default."""
    if text.count(DEFAULT_POOL) != 1 or text.count(IMPORTS_END) != 1:
        raise SystemExit(f"{path.name}: protoc's output changed; update proto/generate.py")
    text = text.replace(IMPORTS_END, IMPORTS_END + "from . import POOL as _POOL\n")
    return text.replace(DEFAULT_POOL, "DESCRIPTOR = _POOL.AddSerializedFile(")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
