"""The messages of ``proto/grpc_predict_v2.proto``, compiled when first needed into a descriptor pool of their own.

Why not ``grpc.protos_and_services``: it loads the proto into protobuf's default pool, where Triton's client
(``tritonclient.grpc``) registers the same ``inference.*`` names from its own ``grpc_service.proto``, so one process
holding both (a notebook that serves a model and calls it) would fail with "duplicate symbol". A private pool
cannot clash, and the service is registered with generic handlers (:data:`METHODS`), so no generated module,
committed or imported, is needed: ``grpc_tools`` compiles the .proto, the wheel ships it as package data.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from torchport.errors import UsageError

PROTO = Path(__file__).resolve().parent / "proto" / "grpc_predict_v2.proto"
SERVICE = "inference.GRPCInferenceService"
#: method -> (request message, response message), every rpc of the service
METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
}


class Messages:
    """The proto's message classes as attributes (``messages.ModelInferRequest``), from their own pool."""

    def __init__(self, file: Any) -> None:
        from google.protobuf import descriptor_pool, message_factory

        self.pool = descriptor_pool.DescriptorPool()
        self.file = self.pool.Add(file)
        package = self.file.package
        self._classes = {
            name: message_factory.GetMessageClass(self.pool.FindMessageTypeByName(f"{package}.{name}"))
            for name in self.file.message_types_by_name
        }

    def __getattr__(self, name: str) -> Any:
        try:
            return self._classes[name]
        except KeyError:
            raise AttributeError(name) from None


def compile_proto(proto: Path = PROTO) -> Any:
    """``proto`` compiled by protoc (grpc_tools) into a ``FileDescriptorProto``."""
    try:
        from google.protobuf import descriptor_pb2
        from grpc_tools import protoc
    except ImportError:
        raise UsageError("--grpc-port needs grpcio-tools and protobuf: pip install grpcio grpcio-tools") from None
    with tempfile.TemporaryDirectory(prefix="torchport-proto-") as folder:
        output = Path(folder) / "descriptor.pb"
        code = protoc.main(["protoc", f"-I{proto.parent}", f"--descriptor_set_out={output}", proto.name])
        if code != 0:
            raise UsageError(f"{proto}: protoc could not compile it (exit {code})")
        files = descriptor_pb2.FileDescriptorSet.FromString(output.read_bytes())
    return files.file[0]


@cache
def messages() -> Messages:
    """The proto's messages, compiled once per process."""
    return Messages(compile_proto())
