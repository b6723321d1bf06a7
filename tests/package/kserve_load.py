"""Load KServe YAML files into the `kserve` package's model classes, in a process of its own.

Run as ``python kserve_load.py FILE...``; prints one JSON object: per file, either ``documents`` (each document as
kserve's ApiClient serialises the loaded object back, with the class it loaded into) or the ``error`` that refused
it. A process of its own because ``import kserve`` registers KServe's v2 gRPC messages (``inference.*``) in
protobuf's default pool, where ``tritonclient.grpc`` (used by the serve tests) registers the same names: in one
pytest process, whichever came second would fail to import.

The load is the generated client's deserialisation made strict: kserve's ApiClient drops a key its classes do
not know, silently, so a misspelt field would pass; here it fails, naming its path. kserve's own types are
OpenAPI classes; the Kubernetes types inside them (V1ObjectMeta, V1Container, ...) are the kubernetes client's
pydantic models, which forbid unknown keys themselves.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import kserve.models
import kubernetes.client
import yaml
from kserve.api_client import ApiClient
from pydantic import BaseModel, ValidationError

KINDS = {"ClusterServingRuntime": "V1alpha1ClusterServingRuntime", "InferenceService": "V1beta1InferenceService"}
PRIMITIVES: dict[str, Any] = {"str": str, "int": int, "bool": bool, "float": (int, float)}


class Refused(Exception):
    pass


def load_as(type_name: str, value: Any, where: str) -> Any:
    """``value`` as an instance of the OpenAPI type ``type_name`` (e.g. ``list[V1Container]``)."""
    if type_name.startswith(("list[", "List[")):
        return [load_as(type_name[5:-1], item, f"{where}[{i}]") for i, item in enumerate(value)]
    mapping = re.fullmatch(r"(?:dict\(|Dict\[)[^,]+, (.*)[)\]]", type_name)
    if mapping:
        return {key: load_as(mapping.group(1), item, f"{where}.{key}") for key, item in value.items()}
    if type_name == "object":
        return value
    if type_name in PRIMITIVES:
        if not isinstance(value, PRIMITIVES[type_name]):
            raise Refused(f"{where}: expected {type_name}, got {value!r}")
        return value
    klass = getattr(kserve.models, type_name, None) or getattr(kubernetes.client, type_name)
    if issubclass(klass, BaseModel):
        try:
            return klass.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Refused(f"{where}.{'.'.join(map(str, first['loc']))}: {first['msg']} ({type_name})") from None
    fields = {key: attr for attr, key in klass.attribute_map.items()}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise Refused(f"{where}.{unknown[0]}: not a field of {type_name}")
    return klass(**{fields[k]: load_as(klass.openapi_types[fields[k]], v, f"{where}.{k}") for k, v in value.items()})


def contained(small: Any, large: Any) -> bool:
    """Every key and value of ``small`` is in ``large`` (which may add the classes' empty defaults)."""
    if isinstance(small, dict):
        return isinstance(large, dict) and all(k in large and contained(v, large[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(large, list) and len(small) == len(large) and all(map(contained, small, large))
    return bool(small == large)


def load_file(path: Path) -> dict[str, Any]:
    documents = []
    for document in yaml.safe_load_all(path.read_text()):
        try:
            loaded = load_as(KINDS[document["kind"]], document, document["kind"])
        except Refused as exc:
            return {"error": str(exc)}
        back = ApiClient().sanitize_for_serialization(loaded)
        if not contained(document, back):
            return {"error": f"{document['kind']}: kserve's classes did not keep every value"}
        documents.append({"class": type(loaded).__name__, "document": back})
    return {"documents": documents}


if __name__ == "__main__":
    print(json.dumps({name: load_file(Path(name)) for name in sys.argv[1:]}))
