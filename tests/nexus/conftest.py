"""Fixtures of the security tests: one set of certificates made with openssl per session."""

from __future__ import annotations

import pytest

from tests.nexus.certs import Certs, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("pki"))
