"""Shared fixtures: the app on a real database built by the migrations, its client and runner.

``TEST_DATABASE_URL`` picks the database (PostgreSQL in CI); without it each test session uses a
fresh SQLite file. Either way the schema comes from ``migrations/``, so the migrations are tested.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dispatch import create_app

# Fixtures by area, each in its own module.
pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.dispatches",
    "tests.fixtures.smtp",
    "tests.fixtures.relay",
    "tests.fixtures.web",
    "tests.fixtures.leadership",
    "tests.fixtures.reminders",
    "tests.fixtures.acknowledgements",
    "tests.fixtures.letter_source",
    "tests.fixtures.libreoffice",
    "tests.fixtures.evidence",
    "tests.fixtures.clerks",
    "tests.fixtures.browser",
    "tests.fixtures.routes",
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The database the tests run against."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def test_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return database_url(tmp_path_factory)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (rendered pages, screenshots)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture()
def app(tmp_path: Path, test_database_url: str):
    """An app bound to the test database and a temporary data folder."""
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": test_database_url,
            "DISPATCH_DATA_DIR": str(tmp_path / "data"),
            "SECRET_KEY": "test-secret",
            "DISPATCH_AUDIT_KEY": "test-audit-key",
            "WTF_CSRF_ENABLED": True,
            "MAIL_SUPPRESS_SEND": False,
        }
    )
    yield app


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def trust_services():
    """The demo PKI's RFC 3161 TSA and OCSP responder over HTTP on a loopback port, for the
    session; ``pki`` attaches itself (tests/fixtures/pki.py)."""
    from tests.fixtures.pki import DemoServices

    services = DemoServices.start()
    yield services
    services.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory, trust_services):
    """The test CA, PKCS#12 keys, SoftHSM2 token and TSA certificate (tests/fixtures/pki.py),
    made once; its certificates name ``trust_services`` as their OCSP responder."""
    from tests.fixtures.pki import make_pki

    made = make_pki(tmp_path_factory.mktemp("pki"), services_url=trust_services.url)
    trust_services.attach(made)
    return made
