"""The JSON API fuzzed from its own OpenAPI document (schemathesis): no 5xx, answers as documented.

The document is read from an app built here (no database needed to serve it); each generated
request then goes, in process, to the test's own app on the real test database, seeded with the
2021 directory and signed with a clerk's bearer token.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dispatch import create_app
from dispatch.models import Role


def _document_app():
    return create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "openapi"}
    )


schema = schemathesis.openapi.from_wsgi("/api/openapi.json", _document_app())


@pytest.fixture()
def api_client(seeded, app):
    """A client of the test's app; the directory and a clerk's draft are there to be found."""
    return app.test_client()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_fails_and_answers_as_documented(case, api_client, api_headers):
    case.call_and_validate(
        session=api_client,
        headers=api_headers[Role.CLERK],
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
