"""Shared pytest fixtures.

Hugging Face Hub: tests never reach huggingface.co. Every test session points the HF libraries at a
loopback Hub (tests/hub_server.py) and at throw-away caches; the server itself only starts when a test
asks for the `hub` fixture:

    def test_round_trip(hub):
        repo_id = hub.repo_id("tiny")                 # "tester/tiny-1a2b3c4d", unique per call
        model.push_to_hub(repo_id)                    # the real client, HF_TOKEN already set
        hub.fresh_cache()                             # empty HF_HUB_CACHE from here on
        again = AutoModel.from_pretrained(repo_id)

Subprocesses (scripts) inherit HF_ENDPOINT / HF_TOKEN / HF_HUB_CACHE from os.environ.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer

# ---- Hugging Face configuration, set before anything imports huggingface_hub ---------------------
# huggingface_hub, transformers and datasets copy HF_ENDPOINT and the cache paths into module
# constants when they are imported (and huggingface_hub builds a module-level HfApi then), so the
# environment has to be right before the first import. pytest imports this file before any test
# module, so it is set here for the whole session. The endpoint is a port this process already holds:
# bound now, served once a test asks for `hub`; until then a stray download gets "connection refused"
# from 127.0.0.1 instead of reaching the internet. Online mode is therefore safe, and HF_HUB_OFFLINE
# is cleared so hub tests behave the same on every machine.

_HUB_SOCKET = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_HUB_SOCKET.bind(("127.0.0.1", 0))
HUB_URL = f"http://127.0.0.1:{_HUB_SOCKET.getsockname()[1]}"
HUB_TOKEN = "hf_loopback_" + secrets.token_hex(16)

_HF_HOME = Path(tempfile.mkdtemp(prefix="pygpt_hf-hf-home-"))
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
SESSION_HUB_CACHE = str(_HF_HOME / "hub")

os.environ.update(
    HF_ENDPOINT=HUB_URL,
    HF_TOKEN=HUB_TOKEN,
    HF_HOME=str(_HF_HOME),
    HF_HUB_CACHE=SESSION_HUB_CACHE,
    HF_DATASETS_CACHE=str(_HF_HOME / "datasets"),
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_XET="1",  # hf_xet is installed; the loopback Hub speaks plain LFS only
)
for _name in (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "TRANSFORMERS_CACHE",
    "HF_HUB_ENABLE_HF_TRANSFER",
):
    os.environ.pop(_name, None)


def _point_imported_libraries_at(url: str) -> None:
    """Fallback for a library imported before this file (e.g. by a plugin): fix its copied constants."""
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as hub_constants
        from huggingface_hub import file_download, hf_api

        template = url + "/{repo_id}/resolve/{revision}/{filename}"
        hub_constants.ENDPOINT = url
        hub_constants.HUGGINGFACE_CO_URL_TEMPLATE = file_download.HUGGINGFACE_CO_URL_TEMPLATE = template
        hub_constants.HF_HUB_OFFLINE = False
        hf_api.api.endpoint = url  # the module-level HfApi behind huggingface_hub.list_repo_files & co
    if "datasets" in sys.modules:
        import datasets.config

        datasets.config.HF_ENDPOINT = url
        datasets.config.HUB_DATASETS_URL = url + "/datasets/{repo_id}/resolve/{revision}/{path}"
    if "transformers.utils.hub" in sys.modules:
        import transformers.utils.hub as transformers_hub

        transformers_hub.HUGGINGFACE_CO_RESOLVE_ENDPOINT = url
        transformers_hub.HUGGINGFACE_CO_PREFIX = url + "/{model_id}/resolve/{revision}/{filename}"


_point_imported_libraries_at(HUB_URL)


def _set_hub_cache(path: str) -> None:
    """Where hf_hub_download / from_pretrained cache files when no cache_dir is given."""
    os.environ["HF_HUB_CACHE"] = path
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_CACHE = path
    if "transformers.utils.hub" in sys.modules:  # copied at import; read by from_pretrained
        sys.modules["transformers.utils.hub"].TRANSFORMERS_CACHE = path


# ---- fixtures ------------------------------------------------------------------------------------


@dataclass
class LoopbackHub:
    """What a hub test needs: where the server is, its token, unique repo ids, fresh caches."""

    url: str
    token: str
    user: str
    server: HubServer
    tmp_path: Path

    def api(self, token: str | bool | None = None):
        """An HfApi on the loopback Hub (token=False: anonymous)."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=self.token if token is None else token)

    def repo_id(self, name: str = "repo") -> str:
        """A repo id no other test uses (the server lives for the whole session)."""
        return f"{self.user}/{name}-{secrets.token_hex(4)}"

    def fresh_cache(self) -> Path:
        """Switch HF_HUB_CACHE (env and the libraries' copies) to a new empty folder and return it."""
        path = Path(tempfile.mkdtemp(prefix="hf-cache-", dir=self.tmp_path))
        _set_hub_cache(str(path))
        return path

    @property
    def lfs_uploads(self) -> list[str]:
        """sha256 of every object the server received through an LFS PUT (whole session)."""
        return list(self.server.lfs_uploads)

    def requests(self, method: str | None = None, path_contains: str = "") -> list[tuple[str, str, int]]:
        """The server's (method, path, status) log, filtered (whole session)."""
        return [r for r in list(self.server.log) if method in (None, r[0]) and path_contains in r[1]]


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory) -> HubServer:
    """The loopback Hub, serving on HF_ENDPOINT for the rest of the session (started on first use)."""
    server = HubServer(tmp_path_factory.mktemp("hub-data"), token=HUB_TOKEN, sock=_HUB_SOCKET)
    stop = server.serve_in_thread()
    yield server
    stop()


@pytest.fixture
def hub(hub_server: HubServer, tmp_path: Path) -> LoopbackHub:
    """The loopback Hub plus an empty HF_HUB_CACHE for this test (restored afterwards)."""
    import huggingface_hub.constants

    assert huggingface_hub.constants.ENDPOINT == hub_server.url, (
        f"huggingface_hub points at {huggingface_hub.constants.ENDPOINT}, not the loopback Hub "
        f"{hub_server.url}: something set HF_ENDPOINT after tests/conftest.py"
    )
    loopback = LoopbackHub(
        url=hub_server.url, token=HUB_TOKEN, user=hub_server.user, server=hub_server, tmp_path=tmp_path
    )
    loopback.fresh_cache()
    yield loopback
    _set_hub_cache(SESSION_HUB_CACHE)
