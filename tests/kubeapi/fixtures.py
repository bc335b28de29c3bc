"""pytest fixtures: ``kube_api`` (one started stand-in with the common CRDs) and
``kube_api_factory`` (as many as a test needs, e.g. one per environment/cluster).

Import them into a conftest (``from tests.kubeapi.fixtures import kube_api,
kube_api_factory  # noqa: F401``) or directly into a test module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from tests.kubeapi.server import KubeApiServer


@dataclass
class KubeApi:
    """A running stand-in plus a client configured for it."""

    server: KubeApiServer
    url: str
    api_client: client.ApiClient
    kubeconfig_path: Path


def api_client_for(server: KubeApiServer) -> client.ApiClient:
    """An ApiClient for the stand-in: plain HTTP, no auth, no retries hiding faults."""
    configuration = client.Configuration(host=server.url)
    configuration.retries = False
    return client.ApiClient(configuration)


@pytest.fixture
def kube_api_factory(tmp_path: Path) -> Iterator[Callable[..., KubeApi]]:
    """``make(context="standin", **KubeApiServer kwargs) -> KubeApi``; all stopped at teardown.

    Each call writes its own kubeconfig ``<tmp>/kubeconfig-<context>``.
    """
    started: list[KubeApi] = []

    def make(context: str = "standin", **options: object) -> KubeApi:
        server = KubeApiServer(**options).start()  # type: ignore[arg-type]
        kubeconfig = server.write_kubeconfig(tmp_path / f"kubeconfig-{context}", context=context)
        api = KubeApi(server, server.url, api_client_for(server), kubeconfig)
        started.append(api)
        return api

    yield make
    for api in started:
        api.api_client.close()
        api.server.stop()


@pytest.fixture
def kube_api(kube_api_factory: Callable[..., KubeApi]) -> KubeApi:
    """A started stand-in with HTTPRoute, VirtualService and Workflow CRDs registered."""
    return kube_api_factory(with_common_crds=True)
