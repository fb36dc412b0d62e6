"""The loopback Hub speaks enough of the Hub's protocol for the real huggingface_hub, datasets and
transformers clients: what later push/pull tests rely on, checked here once, through those clients."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.utils import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_create_repo_models_datasets_private_and_conflicts(hub):
    api = hub.api()
    assert api.whoami()["name"] == hub.user
    model_id, dataset_id, private_id = hub.repo_id("model"), hub.repo_id("data"), hub.repo_id("secret")

    url = api.create_repo(model_id)
    assert url == f"{hub.url}/{model_id}" and url.repo_type == "model"
    assert api.create_repo(dataset_id, repo_type="dataset").repo_type == "dataset"
    api.create_repo(private_id, private=True)

    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(model_id)
    assert conflict.value.response.status_code == 409 and conflict.value.response.json()["url"].endswith(model_id)
    assert api.create_repo(model_id, exist_ok=True) == url

    assert api.repo_info(model_id).private is False
    assert api.repo_info(private_id).private is True
    assert api.dataset_info(dataset_id).id == dataset_id
    assert api.repo_exists(dataset_id, repo_type="dataset") and not api.repo_exists(dataset_id)  # not a model
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(hub.repo_id("never-created"))
    with pytest.raises(HfHubHTTPError):  # writing needs the token
        hub.api(token=False).create_repo(hub.repo_id("anonymous"))


def test_small_files_go_inline_and_a_large_one_through_lfs(hub, tmp_path):
    api, repo_id = hub.api(), hub.repo_id("weights")
    api.create_repo(repo_id)
    weights = os.urandom(12 * 1024 * 1024)
    files = {"config.json": b'{"n_layer": 1}\n', "notes/readme.txt": b"tiny\n", "model.safetensors": weights}
    before = len(hub.lfs_uploads)
    commit = api.upload_folder(repo_id=repo_id, folder_path=write_files(tmp_path / "up", files))

    assert len(hub.lfs_uploads) == before + 1  # exactly the weights went through an LFS PUT
    tree = {entry.path: entry for entry in api.list_repo_tree(repo_id, recursive=True)}
    assert tree["model.safetensors"].lfs.size == len(weights)
    assert tree["model.safetensors"].lfs.sha256 == hub.lfs_uploads[-1]
    assert tree["config.json"].lfs is None and tree["config.json"].size == len(files["config.json"])
    assert set(tree) == {".gitattributes", "config.json", "notes", "notes/readme.txt", "model.safetensors"}

    hub.fresh_cache()
    assert Path(hf_hub_download(repo_id, "model.safetensors")).read_bytes() == weights
    snapshot = Path(snapshot_download(repo_id, cache_dir=hub.fresh_cache()))
    assert snapshot.name == commit.oid
    for name, data in files.items():
        assert (snapshot / name).read_bytes() == data

    # The same bytes under another name: the LFS batch answers "already stored", nothing is PUT again.
    api.upload_file(path_or_fileobj=weights, path_in_repo="copy.safetensors", repo_id=repo_id)
    assert len(hub.lfs_uploads) == before + 1
    assert Path(hf_hub_download(repo_id, "copy.safetensors")).read_bytes() == weights


def test_each_commit_is_a_revision(hub):
    api, repo_id = hub.api(), hub.repo_id("history")
    api.create_repo(repo_id)
    first = api.create_commit(
        repo_id, [CommitOperationAdd("a.txt", b"v1\n"), CommitOperationAdd("old/b.txt", b"b")], commit_message="first"
    )
    second = api.create_commit(
        repo_id, [CommitOperationAdd("a.txt", b"v2\n"), CommitOperationDelete("old/")], commit_message="second"
    )
    assert first.oid != second.oid and re.fullmatch(r"[0-9a-f]{40}", second.oid)
    assert api.repo_info(repo_id).sha == second.oid
    assert [c.title for c in api.list_repo_commits(repo_id)] == ["second", "first", "initial commit"]

    assert Path(hf_hub_download(repo_id, "a.txt")).read_bytes() == b"v2\n"
    assert Path(hf_hub_download(repo_id, "a.txt", revision=first.oid)).read_bytes() == b"v1\n"
    assert not api.file_exists(repo_id, "old/b.txt")
    assert api.file_exists(repo_id, "old/b.txt", revision=first.oid)
    old = Path(snapshot_download(repo_id, revision=first.oid, cache_dir=hub.fresh_cache()))
    assert (old / "a.txt").read_bytes() == b"v1\n" and (old / "old" / "b.txt").read_bytes() == b"b"

    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "a.txt", revision="0" * 40)
    with pytest.raises(HfHubHTTPError) as stale:  # parent_commit guards against concurrent pushes
        api.create_commit(repo_id, [CommitOperationAdd("a.txt", b"v3")], commit_message="x", parent_commit=first.oid)
    assert stale.value.response.status_code == 412


def test_private_repo_needs_the_token(hub, tmp_path):
    repo_id = hub.repo_id("private")
    hub.api().create_repo(repo_id, private=True)
    hub.api().upload_file(path_or_fileobj=b"secret\n", path_in_repo="s.txt", repo_id=repo_id)

    anonymous = hub.api(token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.repo_info(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, "s.txt", token=False, cache_dir=tmp_path / "anon")
    with pytest.raises(HfHubHTTPError) as wrong:
        hf_hub_download(repo_id, "s.txt", token="hf_wrong", cache_dir=tmp_path / "wrong")
    assert wrong.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError):  # nor written
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)

    assert Path(hf_hub_download(repo_id, "s.txt", token=hub.token)).read_bytes() == b"secret\n"
    assert hub.api().list_repo_files(repo_id) == [".gitattributes", "s.txt"]


def test_listing_and_probing_files(hub):
    api, repo_id = hub.api(), hub.repo_id("listing")
    api.create_repo(repo_id)
    api.create_commit(
        repo_id,
        [
            CommitOperationAdd("config.json", b"{}"),
            CommitOperationAdd("sub/dir/x.bin", b"\0\1"),
            CommitOperationAdd("sub/y.txt", b"y"),
        ],
        commit_message="files",
    )

    assert api.list_repo_files(repo_id) == [".gitattributes", "config.json", "sub/dir/x.bin", "sub/y.txt"]
    assert [f.rfilename for f in api.repo_info(repo_id).siblings] == api.list_repo_files(repo_id)
    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree(repo_id, path_in_repo="sub")}
    assert top == {"sub/dir": "RepoFolder", "sub/y.txt": "RepoFile"}
    info = {entry.path: entry for entry in api.get_paths_info(repo_id, ["config.json", "sub", "missing.txt"])}
    assert set(info) == {"config.json", "sub"} and info["config.json"].size == 2
    assert next(e for e in api.list_repo_tree(repo_id, recursive=True) if e.path == "sub/dir/x.bin").lfs is not None

    assert api.file_exists(repo_id, "config.json") and not api.file_exists(repo_id, "added_tokens.json")
    with pytest.raises(EntryNotFoundError):  # the answer transformers turns into "optional file absent"
        hf_hub_download(repo_id, "added_tokens.json")
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="additional_chat_templates"))
    assert api.list_repo_refs(repo_id).branches[0].name == "main"
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):  # validate-yaml refuses bad YAML
        api.upload_file(path_or_fileobj=b"---\nlicense: [mit\n---\n", path_in_repo="README.md", repo_id=repo_id)


def test_datasets_streams_jsonl_through_the_readme_configs(hub):
    import datasets

    api, repo_id = hub.api(), hub.repo_id("jsonl")
    api.create_repo(repo_id, repo_type="dataset")
    rows = [{"text": f"document {i} <|endoftext|>", "id": i} for i in range(50)]
    readme = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: corpus/*.jsonl\n---\n# Tiny\n"
    api.create_commit(
        repo_id,
        repo_type="dataset",
        commit_message="data",
        operations=[
            CommitOperationAdd("README.md", readme.encode()),
            CommitOperationAdd("corpus/part-0.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()),
        ],
    )

    stream = datasets.load_dataset(repo_id, split="train", streaming=True)
    assert list(stream) == rows  # found only through the README's `configs:` (not a default data path)
    assert hub.requests("GET", f"/datasets/{repo_id}/resolve/")[-1][2] == 206  # read with ranged GETs


def test_datasets_streams_parquet_from_lfs_in_a_private_repo(hub):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    api, repo_id = hub.api(), hub.repo_id("parquet")
    api.create_repo(repo_id, repo_type="dataset", private=True)
    table = pa.table({"text": [f"row {i}" for i in range(300)], "id": list(range(300))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=100)
    api.upload_file(
        path_or_fileobj=buffer.getvalue(), path_in_repo="data/train-00000.parquet", repo_id=repo_id, repo_type="dataset"
    )
    assert next(iter(api.list_repo_tree(repo_id, "data", repo_type="dataset"))).lfs is not None

    stream = datasets.load_dataset(repo_id, split="train", streaming=True)  # HF_TOKEN from the environment
    assert list(stream) == table.to_pylist()
    with pytest.raises(datasets.exceptions.DatasetNotFoundError):
        datasets.load_dataset(repo_id, split="train", streaming=True, token=False)


def test_transformers_loads_config_and_gpt2_tokenizer_through_the_hub(hub, tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoConfig, AutoTokenizer, GPT2Config

    folder = tmp_path / "gpt2ish"
    GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=300).save_pretrained(folder)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ["the loopback hub serves tiny tokenizers"] * 20, vocab_size=300, min_frequency=1, show_progress=False
    )
    bpe.save_model(str(folder))  # vocab.json + merges.txt (with its "#version" header line)
    repo_id = hub.repo_id("gpt2ish")
    hub.api().create_repo(repo_id)
    first = hub.api().upload_folder(repo_id=repo_id, folder_path=folder)

    hub.fresh_cache()
    config = AutoConfig.from_pretrained(repo_id)
    assert (config.model_type, config.n_layer, config.vocab_size) == ("gpt2", 1, 300)
    tokenizer = AutoTokenizer.from_pretrained(repo_id)
    text = "the loopback hub"
    assert tokenizer(text)["input_ids"] == bpe.encode(text).ids
    assert hub.requests("HEAD", f"/{repo_id}/resolve/main/added_tokens.json")[-1][2] == 404  # optional probes

    GPT2Config(n_layer=2, n_head=2, n_embd=8, vocab_size=300).save_pretrained(folder)
    hub.api().upload_folder(repo_id=repo_id, folder_path=folder)
    assert AutoConfig.from_pretrained(repo_id).n_layer == 2
    hub.fresh_cache()  # the pinned commit must come from the server, not from the cache of the first load
    assert AutoConfig.from_pretrained(repo_id, revision=first.oid).n_layer == 1


STANDALONE_CLIENT = """
import sys
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
repo_id = api.create_repo("tester/standalone", private=True).repo_id
api.upload_file(path_or_fileobj=b"kept\\n", path_in_repo="f.txt", repo_id=repo_id)
sys.stdout.write(open(hf_hub_download(repo_id, "f.txt"), "rb").read().decode())
"""


def test_standalone_server_keeps_repos_on_disk(tmp_path):
    token, data_dir = "hf_standalone_token", tmp_path / "data"

    def serve() -> tuple[subprocess.Popen, str]:
        process = subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "tests" / "hub_server.py"),
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                "--token",
                token,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, f"no URL in the server's first line: {line!r}"
        return process, match.group(0)

    # A client in its own process, configured the way a user would: HF_ENDPOINT and HF_TOKEN. (In this
    # process the libraries already hold the session's endpoint in their import-time constants.)
    process, url = serve()
    try:
        env = {**os.environ, "HF_ENDPOINT": url, "HF_TOKEN": token, "HF_HUB_CACHE": str(tmp_path / "cache")}
        client = subprocess.run(
            [sys.executable, "-c", STANDALONE_CLIENT], check=False, env=env, capture_output=True, text=True, timeout=60
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout == "kept\n"
    finally:
        process.terminate()
        process.wait(timeout=10)

    process, url = serve()  # a new server process on the same data dir serves the same private repo
    try:
        resolve = f"{url}/tester/standalone/resolve/main/f.txt"
        with urllib.request.urlopen(urllib.request.Request(resolve, headers={"Authorization": f"Bearer {token}"})) as r:
            assert r.read() == b"kept\n" and r.headers["X-Repo-Commit"]
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(resolve)
        assert anonymous.value.headers["X-Error-Code"] == "RepoNotFound"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_start_hub_server_in_a_thread_without_token_is_open(tmp_path):
    from hub_server import start_hub_server

    url, stop = start_hub_server(tmp_path / "data")
    try:
        create = urllib.request.Request(
            f"{url}/api/repos/create", data=json.dumps({"name": "open", "organization": "someone"}).encode()
        )
        with urllib.request.urlopen(create) as r:  # no Authorization header needed
            assert json.load(r)["url"] == f"{url}/someone/open"
        with urllib.request.urlopen(f"{url}/api/models/someone/open") as r:
            assert [s["rfilename"] for s in json.load(r)["siblings"]] == [".gitattributes"]
    finally:
        stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/api/models/someone/open", timeout=5)
