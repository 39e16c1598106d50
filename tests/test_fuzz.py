"""Fuzz the JSON API from its own OpenAPI document (schemathesis, seeded and bounded) over real
HTTP: no 5xx, every documented response matches its schema, every error body says what's wrong."""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from notifications.api import api
from tests.client import ApiClient
from tests.factories import make_document, make_user

EXAMPLES = 30  # per operation; 15 operations


def error_names_the_problem(ctx, response, case):
    """A 4xx answer carries a JSON body with a non-empty "detail"."""
    if 400 <= response.status_code < 500:
        body = json.loads(response.content)
        assert isinstance(body, dict) and body.get("detail"), f"{response.status_code}: {body!r}"


# The document /api/openapi.json serves, built without a request; calls go to the live server.
schema = schemathesis.openapi.from_dict(api.get_openapi_schema(path_prefix="/api"))


@pytest.fixture
def signed_in(live_server, transactional_db) -> ApiClient:
    """A browser-like session of a user who owns a document."""
    user = make_user("fuzzer", email="fuzzer@example.com")
    make_document(user)
    client = ApiClient(live_server.url)
    assert client.sign_in("fuzzer").status_code == 200
    return client


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,  # seeded: the same examples on every run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_holds_under_generated_input(case, signed_in, live_server):
    case.call_and_validate(
        base_url=live_server.url,
        session=signed_in.http,
        headers=signed_in.csrf_header,
        checks=[not_a_server_error, response_schema_conformance, error_names_the_problem],
    )
