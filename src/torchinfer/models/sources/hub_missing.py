"""A hub id (``hf-hub:ORG/NAME``, ``timm/NAME``) that the local cache does not hold: nothing
builds it, and nothing is downloaded; loading it says where it was looked for and how to
fetch it on a machine with network (``hub_files.missing_message``)."""

from __future__ import annotations

from ...errors import ModelNotFoundError
from ..loaded import LoadedModel
from .base import ModelSource, SourceRequest
from .hub_files import HUB_PREFIX, missing_message, parse_hub_id


class MissingHubSource(ModelSource):
    name = "hub-missing"

    def recognises(self, spec: str) -> bool:
        return parse_hub_id(spec) is not None

    def load(self, spec: str, request: SourceRequest) -> LoadedModel:
        hub_id = parse_hub_id(spec)
        assert hub_id is not None  # recognised
        where = "" if spec.startswith(HUB_PREFIX) else "no file or folder of that name, and "
        raise ModelNotFoundError(f"{spec}: {where}{missing_message(*hub_id)}")
