"""/v1 is a promise to programs: its OpenAPI document may only change on purpose.

The snapshot `tests/api_v1_openapi.json` is the /v1 schema as released. A change to a route, a
parameter or a shape fails this test until the snapshot is updated deliberately:

    CLASSIFR_UPDATE_API_SNAPSHOT=1 pytest tests/test_api_schema.py

Only additions belong in /v1 (a new route, a new optional field); a change that breaks a caller
goes into a /v2 mounted beside it (docs/api.md, "Versions of the API").
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

from classifr.core.config import Settings

SNAPSHOT = Path(__file__).parent / "api_v1_openapi.json"


def _schema(tmp_path: Path, tiny_default_version) -> str:
    from classifr.api.app import build_api, close_api
    from classifr.app.project import open_service

    service = open_service(Settings(home=tmp_path / "home", num_threads=1, backend="torch"), default_version=tiny_default_version)
    api = build_api(service)
    try:
        return json.dumps(api.openapi(), indent=1, sort_keys=True) + "\n"
    finally:
        close_api(api)
        service.close()


@pytest.mark.slow  # builds a project (about 5 s)
def test_the_v1_schema_matches_its_snapshot(tmp_path, tiny_default_version):
    schema = _schema(tmp_path, tiny_default_version)
    if os.environ.get("CLASSIFR_UPDATE_API_SNAPSHOT") == "1":
        SNAPSHOT.write_text(schema)
    released = SNAPSHOT.read_text()
    if schema != released:
        diff = "".join(list(difflib.unified_diff(released.splitlines(True), schema.splitlines(True), "released", "now"))[:60])
        raise AssertionError(
            "the /v1 schema changed. If on purpose (only additions belong in /v1), update the snapshot with\n"
            f"    CLASSIFR_UPDATE_API_SNAPSHOT=1 pytest tests/test_api_schema.py\n{diff}"
        )
