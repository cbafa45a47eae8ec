"""Property-based: every operation of the OpenAPI schema, fuzzed by schemathesis over ASGI,
against the real dataset. No 5xx, every status and body as documented."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from schemas.intervals import BINANCE_INTERVALS
from tests.api.conftest import AUTH, SYMBOL, Dataset, api_settings

pytestmark = pytest.mark.broker


# The schema does not depend on data or settings values; building it opens nothing.
schema = schemathesis.openapi.from_dict(create_app(api_settings()).openapi())


@pytest.fixture(scope="module")
def dataset_app(dataset: Dataset) -> FastAPI:
    return dataset.app()


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx_and_matches_its_schema(case: Any, dataset_app: FastAPI) -> None:
    # most generated streams become served ones, so 200s are fuzzed too, not only 404s
    q = case.query or {}
    if isinstance(q.get("symbol"), str) and len(q["symbol"]) % 4 != 0:
        q["symbol"] = SYMBOL
        if q.get("interval") in BINANCE_INTERVALS and q["interval"] not in ("1m", "5m"):
            q["interval"] = "1m" if len(q["interval"]) % 2 else "5m"
    case.call_and_validate(
        app=dataset_app,
        headers=dict(AUTH),  # schemathesis adds its own headers to the dict it gets
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
