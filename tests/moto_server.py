"""moto's standalone server (STS, S3) on 127.0.0.1, on a free port, for the whole test session.

The server runs in a thread of the test process and speaks real HTTP, so aiobotocore's
serialization, signing and error parsing run as against AWS. Each test that uses it gets a
reset server (``moto`` fixture) with ``AWS_ENDPOINT_URL_STS`` and ``AWS_ENDPOINT_URL_S3``
pointing at it: botocore's assume-role provider builds its own STS client, which honours only
the environment, not a client's ``endpoint_url``.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer


class MotoServer:
    """A running moto server: its URL, a reset, and its recorded state."""

    __slots__ = ("_server", "url")

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def __repr__(self) -> str:
        return f"<MotoServer {self.url}>"

    def reset(self) -> None:
        """Forget every bucket, object and assumed role."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def data(self) -> dict[str, Any]:
        """moto's state: ``data()["sts"]["assumed_roles"]`` maps access key ids to accounts."""
        with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=10) as answer:
            loaded: dict[str, Any] = json.loads(answer.read())
        return loaded

    def assumed_roles(self) -> list[dict[str, Any]]:
        """Every role assumed so far: ``access_key_id``, ``account_id``, ``role_arn``,
        ``external_id``, ``session_name`` (moto keeps no duration)."""
        roles: list[dict[str, Any]] = self.data().get("sts", {}).get("AssumedRole", [])
        return roles

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A reset moto server, with the STS and S3 endpoint variables pointing at it."""
    moto_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.url)
    return moto_server
