"""Make a module protoc generated (``make grpc-stubs``) safe to import beside other packages.

Two changes, each said in the module's first line:
- its messages go in a descriptor pool of their own, not protobuf's process-wide default one:
  the OIP's messages are named ``inference.*`` in every implementation (Triton's client,
  KServe's), and a second registration of the same names in the default pool fails the import;
- protoc's runtime-version check is dropped: it stamps protoc's own protobuf version and refuses
  older runtimes, but the module uses only the descriptor pool and ``builder`` (protobuf 4.21
  and later), and the packages installed beside torchinfer pin protobuf differently.

    python scripts/finish_protobuf_module.py src/torchinfer/serve/protocol/oip_v2_pb2.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CHECK = re.compile(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)\n")
IMPORT = "from google.protobuf import runtime_version as _runtime_version\n"
DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
OWN_POOL = "POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile("
NOTE = ("# Finished by scripts/finish_protobuf_module.py (make grpc-stubs): a descriptor pool of "
        "its own, no runtime-version check\n")


def main(path: str) -> None:
    file = Path(path)
    text = file.read_text()
    text, checks = CHECK.subn("", text.replace(IMPORT, ""))
    if checks != 1 or text.count(DEFAULT_POOL) != 1:
        raise SystemExit(f"{file}: not the module protoc writes (version checks: {checks})")
    file.write_text(NOTE + text.replace(DEFAULT_POOL, OWN_POOL))


if __name__ == "__main__":
    main(sys.argv[1])
