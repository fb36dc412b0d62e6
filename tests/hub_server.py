#!/usr/bin/env python
"""A loopback Hugging Face Hub: the part of the Hub's HTTP protocol that huggingface_hub 0.36 speaks.

Why: the real Hub is out of reach from our machines, and a patched client would test nothing. This
server lets the real `huggingface_hub`, `transformers` and `datasets` push and pull through their
ordinary code paths; tests only point `HF_ENDPOINT` at it.

    python tests/hub_server.py --port 0 --data-dir /tmp/hub [--token TOKEN]   # prints its URL
    url, stop = start_hub_server("/tmp/hub", token="...")  # in a background thread

What it keeps on disk under the data dir (so big files never sit in memory, and it survives restarts):

    blobs/<sha256[:2]>/<sha256>                       every file's bytes, content-addressed
    repos/<type>s/<namespace>/<name>/repo.json        {"private", "createdAt", "branches": {name: sha}}
    repos/<type>s/<namespace>/<name>/commits/<sha>.json
        {"parents", "title", "description", "date", "files": {path: {sha256, size, oid, lfs}}}

Every commit keeps its whole file table, so any commit sha works as a revision. A commit's sha is the
sha1 of its parents, file table, message and time. A new repo starts with the Hub's first commit, a
`.gitattributes` naming the LFS patterns below.

Rules, kept simple and stated once:
- LFS or regular (preupload): LFS when the file is over 10 MiB, its name matches LFS_PATTERNS, or its
  first 512 bytes contain a NUL byte (binary); regular otherwise. Empty files are always regular (the
  client forces that itself).
- Auth: `--token T` is the one valid token. A request carrying another token gets 401 "Invalid
  credentials in Authorization header" (as on the Hub). Writes need T; reading a private repo without T
  gets 401 RepoNotFound, exactly what the Hub answers for a repo you may not see. Without `--token`
  nothing is checked (private is only a flag).
- Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) and `X-Error-Message`,
  the only way the client tells them apart. A missing file answers 404 EntryNotFound with
  `X-Repo-Commit`, which is how transformers learns that an optional file is absent.
- Files are served directly (no redirect to a CDN), with the headers `hf_hub_download` reads
  (X-Repo-Commit, ETag / X-Linked-Etag, Content-Length / X-Linked-Size) and single byte ranges
  (206 + Content-Range) for `datasets` streaming.
- LFS uploads use the "basic" transfer (one PUT per object), which also keeps the client off Xet.
  The upload href carries a one-time ticket instead of a token, like a presigned S3 URL.
"""

from __future__ import annotations

import argparse
import base64
import collections
import fnmatch
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

try:  # only to check README.md metadata (installed with huggingface_hub); skipped without it
    import yaml
except ImportError:
    yaml = None

DEFAULT_USER = "tester"
REPO_TYPES = ("model", "dataset", "space")
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # as in resolve / .git URLs
LFS_MIN_SIZE = 10 * 1024 * 1024
LFS_PATTERNS = (  # a subset of the Hub's default .gitattributes
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.safetensors",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
)
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)


class HubError(Exception):
    """An HTTP error answered the Hub's way: status, X-Error-Code, X-Error-Message, JSON body."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob: sha1 over "blob <size>\\0" + content (what the Hub lists as `oid`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The small text file git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def wants_lfs(path: str, size: int, sample: bytes) -> bool:
    """The preupload rule (see the module docstring)."""
    name = path.rsplit("/", 1)[-1]
    return size > LFS_MIN_SIZE or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS) or b"\0" in sample


def check_repo_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


# --------------------------------------------------------------------------------------------------
# Storage: blobs, repos, commits (all on disk, one lock for writes)
# --------------------------------------------------------------------------------------------------


class HubStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # -- blobs ---------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and path.stat().st_size == size

    def put_blob(self, chunks: Iterable[bytes], expected_sha256: str | None = None) -> tuple[str, int]:
        """Stream chunks to a temp file, then rename it to its sha256 name (atomic; never half a blob)."""
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "blobs", prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise HubError(400, f"Uploaded content has sha256 {sha256}, expected {expected_sha256}")
            self.blob_path(sha256).parent.mkdir(exist_ok=True)
            os.replace(tmp, self.blob_path(sha256))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return sha256, size

    def file_entry(self, sha256: str, size: int, lfs: bool) -> dict:
        """A file-table entry; `oid` is the git oid the Hub lists (of the pointer file for LFS)."""
        if lfs:
            pointer = lfs_pointer(sha256, size)
            return {
                "sha256": sha256,
                "size": size,
                "lfs": True,
                "oid": git_blob_oid(pointer),
                "pointerSize": len(pointer),
            }
        return {"sha256": sha256, "size": size, "lfs": False, "oid": git_blob_oid(self.blob_path(sha256).read_bytes())}

    # -- repos ---------------------------------------------------------------------------------------
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_type}s" / repo_id

    def load_repo(self, repo_type: str, repo_id: str) -> dict | None:
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_repo(self, repo_type: str, repo_id: str, meta: dict) -> None:
        self._write_json(self.repo_dir(repo_type, repo_id) / "repo.json", meta)

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> bool:
        """False when it exists already. A new repo gets the Hub's first commit (.gitattributes)."""
        with self.lock:
            if self.load_repo(repo_type, repo_id) is not None:
                return False
            (self.repo_dir(repo_type, repo_id) / "commits").mkdir(parents=True, exist_ok=True)
            self.save_repo(repo_type, repo_id, {"private": bool(private), "createdAt": now_iso(), "branches": {}})
            sha256, size = self.put_blob([GITATTRIBUTES.encode()])
            files = {".gitattributes": self.file_entry(sha256, size, lfs=False)}
            self._new_commit(repo_type, repo_id, "main", files, "initial commit", "")
            return True

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            shutil.rmtree(self.repo_dir(repo_type, repo_id))

    # -- commits -------------------------------------------------------------------------------------
    def resolve_revision(self, repo_type: str, repo_id: str, revision: str) -> str | None:
        """A branch name or a full commit sha -> the commit sha; None when neither."""
        meta = self.load_repo(repo_type, repo_id)
        if revision in meta["branches"]:
            return meta["branches"][revision]
        if re.fullmatch(r"[0-9a-f]{40}", revision) and self._commit_path(repo_type, repo_id, revision).is_file():
            return revision
        return None

    def load_commit(self, repo_type: str, repo_id: str, sha: str) -> dict:
        return json.loads(self._commit_path(repo_type, repo_id, sha).read_text())

    def commit(
        self,
        repo_type: str,
        repo_id: str,
        branch: str,
        operations: list[tuple[str, dict]],
        title: str,
        description: str,
        parent_commit: str | None,
    ) -> str:
        """Apply (kind, value) operations from the NDJSON payload on top of the branch head."""
        with self.lock:
            meta = self.load_repo(repo_type, repo_id)
            if branch not in meta["branches"]:
                raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
            head = meta["branches"][branch]
            if parent_commit is not None and parent_commit != head:
                raise HubError(412, f"A commit has happened since. Parent {parent_commit} is not {head}")
            files = dict(self.load_commit(repo_type, repo_id, head)["files"])
            for kind, value in operations:
                path = value.get("path", "")
                path = check_repo_path(path.rstrip("/") if kind == "deletedFolder" else path)
                if kind == "file":  # a regular file, inline and base64
                    sha256, size = self.put_blob([base64.b64decode(value["content"])])
                    files[path] = self.file_entry(sha256, size, lfs=False)
                elif kind == "lfsFile":  # uploaded beforehand through the LFS batch API
                    if not self.has_blob(value["oid"], value["size"]):
                        raise HubError(400, f"LFS object {value['oid']} for {path} was never uploaded")
                    files[path] = self.file_entry(value["oid"], value["size"], lfs=True)
                elif kind == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif kind == "deletedFolder":
                    prefix = path + "/"
                    gone = [p for p in files if p.startswith(prefix)]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del files[p]
                else:
                    raise HubError(400, f"Unknown commit operation {kind!r}")
            return self._new_commit(repo_type, repo_id, branch, files, title, description)

    def _new_commit(self, repo_type: str, repo_id: str, branch: str, files: dict, title: str, description: str) -> str:
        meta = self.load_repo(repo_type, repo_id)
        parents = [meta["branches"][branch]] if branch in meta["branches"] else []
        commit = {
            "parents": parents,
            "title": title,
            "description": description,
            "date": now_iso(),
            "files": dict(sorted(files.items())),
        }
        sha = hashlib.sha1(json.dumps(commit, sort_keys=True).encode()).hexdigest()
        self._write_json(self._commit_path(repo_type, repo_id, sha), commit)
        meta["branches"][branch] = sha  # the branch moves only once the commit is on disk
        self.save_repo(repo_type, repo_id, meta)
        return sha

    def _commit_path(self, repo_type: str, repo_id: str, sha: str) -> Path:
        return self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json"

    @staticmethod
    def _write_json(path: Path, obj: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{threading.get_ident()}")
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# The HTTP side: one handler, a small route table
# --------------------------------------------------------------------------------------------------

_T = r"(?P<type>models|datasets|spaces)"  # /api/{type}s/...
_P = r"(?:(?P<type>datasets|spaces)/)?"  # URL prefix of resolve and .git URLs (none for models)
_R = r"(?P<namespace>[^/]+)/(?P<name>[^/]+)"
_REV = r"(?P<rev>[^/]+)"  # the client quotes revisions with safe="" (refs/pr/1 -> refs%2Fpr%2F1)

ROUTES: list[tuple[str, str, str]] = [
    # (method, path pattern, handler)          # which client call uses it
    ("GET", r"/api/whoami-v2", "whoami"),  # HfApi.whoami
    ("POST", r"/api/repos/create", "create_repo"),  # HfApi.create_repo
    ("DELETE", r"/api/repos/delete", "delete_repo"),  # HfApi.delete_repo
    ("POST", r"/api/validate-yaml", "validate_yaml"),  # create_commit when README.md is added
    ("GET", rf"/api/{_T}/{_R}(?:/revision/{_REV})?", "repo_info"),  # repo_info, snapshot_download, datasets
    ("GET", rf"/api/{_T}/{_R}/tree/{_REV}(?:/(?P<path>.*))?", "tree"),  # list_repo_tree/files, HfFileSystem.ls
    ("POST", rf"/api/{_T}/{_R}/paths-info/{_REV}", "paths_info"),  # get_paths_info, HfFileSystem.info
    ("POST", rf"/api/{_T}/{_R}/preupload/{_REV}", "preupload"),  # create_commit: lfs or regular?
    ("POST", rf"/api/{_T}/{_R}/commit/{_REV}", "commit"),  # create_commit (NDJSON)
    ("GET", rf"/api/{_T}/{_R}/refs", "refs"),  # list_repo_refs
    ("GET", rf"/api/{_T}/{_R}/commits/{_REV}", "commits"),  # list_repo_commits
    ("POST", rf"/api/{_T}/{_R}/branch/(?P<branch>[^/]+)", "create_branch"),  # create_branch
    ("POST", rf"/{_P}{_R}\.git/info/lfs/objects/batch", "lfs_batch"),  # create_commit, LFS files
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),  # upload href from lfs_batch
    ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", "lfs_verify"),  # verify href from lfs_batch
    ("GET", rf"/{_P}{_R}/resolve/{_REV}/(?P<path>.+)", "resolve"),  # hf_hub_download, HfFileSystem
    ("HEAD", rf"/{_P}{_R}/resolve/{_REV}/(?P<path>.+)", "resolve"),  # get_hf_file_metadata
]
_COMPILED = [(method, re.compile(pattern), handler) for method, pattern, handler in ROUTES]


class HubRequestHandler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.0"  # one request per connection: simple and robust
    error_content_type = "application/json"

    # -- dispatch ------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.status = 0
        try:
            for route_method, pattern, handler in _COMPILED:
                match = pattern.fullmatch(url.path)
                if match and route_method == method:
                    self.params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    getattr(self, "route_" + handler)()
                    break
            else:
                raise HubError(404, f"No route for {method} {url.path} on the loopback Hub")
        except HubError as e:
            self._send_error(e)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 -- a bug here: answer it plainly, do not drop the connection
            traceback.print_exc()
            self._send_error(HubError(500, f"Loopback Hub error: {type(e).__name__}: {e}"))
        finally:
            self.server.log.append((method, url.path, self.status))

    def log_message(self, format: str, *args) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # -- request and response helpers ---------------------------------------------------------------
    def _body_chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The request body, streamed (Content-Length or chunked transfer encoding)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()  # the CRLF after each chunk
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.rfile.read(min(chunk_size, remaining))
            if not chunk:
                raise HubError(400, "Request body ended early")
            remaining -= len(chunk)
            yield chunk

    def _json_body(self) -> dict:
        try:
            return json.loads(b"".join(self._body_chunks()) or b"{}")
        except json.JSONDecodeError as e:
            raise HubError(400, f"Request body is not JSON: {e}") from e

    def _send(
        self, status: int, body: bytes = b"", content_type: str = "application/json", headers: dict | None = None
    ) -> None:
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, error: HubError) -> None:
        """The Hub's error shape: JSON {"error"}, plus the headers the client reads (ASCII, one line)."""
        message = error.message.encode("ascii", "backslashreplace").decode().replace("\n", " ")
        headers = {"X-Error-Message": message, **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, json.dumps({"error": error.message}).encode(), "application/json", headers)

    def _send_json(self, obj, status: int = 200, content_type: str = "application/json") -> None:
        self._send(status, json.dumps(obj).encode(), content_type)

    def _base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host') or f'{host}:{port}'}"

    # -- auth and lookups ----------------------------------------------------------------------------
    def _authorized(self) -> bool:
        """True when the request carries the server's token, or the server has none."""
        header = self.headers.get("Authorization")
        if self.server.token is None:
            return True
        if header is None:
            return False
        if header != f"Bearer {self.server.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _require_write(self) -> None:
        if not self._authorized():
            raise HubError(401, "You must be authenticated (Authorization: Bearer <token>) to write")

    def _repo(self, write: bool = False) -> tuple[str, str, dict]:
        """(repo_type, repo_id, meta) of the route's repo; refused like the Hub when not visible."""
        repo_type = self.params.get("type", "models")[:-1]  # "datasets" -> "dataset"; model URLs have none
        repo_id = f"{self.params['namespace']}/{self.params['name']}"
        authorized = self._authorized()
        meta = self.server.store.load_repo(repo_type, repo_id)
        if meta is None or (meta["private"] and not authorized):
            raise HubError(401 if not authorized else 404, "Repository not found", "RepoNotFound")
        if write and not authorized:
            raise HubError(401, "You must be authenticated (Authorization: Bearer <token>) to write")
        return repo_type, repo_id, meta

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> tuple[str, dict]:
        sha = self.server.store.resolve_revision(repo_type, repo_id, revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, self.server.store.load_commit(repo_type, repo_id, sha)

    @staticmethod
    def _file_item(path: str, entry: dict) -> dict:
        """A file as list_repo_tree / get_paths_info return it."""
        item = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": entry["pointerSize"]}
        return item

    @staticmethod
    def _folder_item(path: str, files: dict) -> dict:
        prefix = path + "/"
        listing = "".join(f"{p} {e['oid']}\n" for p, e in files.items() if p.startswith(prefix))
        return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}

    @staticmethod
    def _folders(files: dict) -> set[str]:
        return {p.rsplit("/", i)[0] for p in files for i in range(1, p.count("/") + 1)}

    # -- routes: account and repos -------------------------------------------------------------------
    def route_whoami(self) -> None:
        if self.headers.get("Authorization") is None or not self._authorized():
            raise HubError(401, "Invalid user token")
        self._send_json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.server.user,
                "fullname": self.server.user,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write"}},
            }
        )

    def route_create_repo(self) -> None:
        self._require_write()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        name, namespace = body.get("name") or "", body.get("organization") or self.server.user
        if not re.fullmatch(r"[\w.\-]{1,96}", name) or not re.fullmatch(r"[\w.\-]{1,96}", namespace):
            raise HubError(400, f"Invalid repo name {namespace}/{name}")
        repo_id = f"{namespace}/{name}"
        url = f"{self._base_url()}/{URL_PREFIX[repo_type]}{repo_id}"
        if not self.server.store.create_repo(repo_type, repo_id, bool(body.get("private"))):
            self._send(
                409,
                json.dumps({"error": "You already created this repo", "url": url}).encode(),
                headers={"X-Error-Message": "You already created this repo"},
            )
            return
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def route_delete_repo(self) -> None:
        self._require_write()
        body = self._json_body()
        self.params = {
            "type": (body.get("type") or "model") + "s",
            "namespace": body.get("organization") or self.server.user,
            "name": body.get("name", ""),
        }
        repo_type, repo_id, _ = self._repo(write=True)
        self.server.store.delete_repo(repo_type, repo_id)
        self._send_json({})

    def route_validate_yaml(self) -> None:
        """Syntax only: the front matter must be a YAML mapping (the Hub also checks its schema)."""
        content = self._json_body().get("content", "")
        match = re.match(r"---\s*\n(.*?)\n---\s*$", content, re.DOTALL | re.MULTILINE)
        errors = []
        if match and yaml is not None:
            try:
                if not isinstance(yaml.safe_load(match.group(1)) or {}, dict):
                    errors.append({"message": "YAML metadata is not a mapping"})
            except yaml.YAMLError as e:
                errors.append({"message": f"YAML metadata does not parse: {e}"})
        if errors:
            self._send(400, json.dumps({"errors": errors, "warnings": [], "error": errors[0]["message"]}).encode())
        else:
            self._send_json({"errors": [], "warnings": []})

    def route_repo_info(self) -> None:
        repo_type, repo_id, meta = self._repo()
        sha, commit = self._commit(repo_type, repo_id, self.params.get("rev", "main"))
        siblings = []
        for path, entry in commit["files"].items():
            sibling = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
            if entry["lfs"]:
                sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": entry["pointerSize"]}
            siblings.append(sibling)
        self._send_json(
            {
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": sha,
                "private": meta["private"],
                "gated": False,
                "disabled": False,
                "createdAt": meta["createdAt"],
                "lastModified": commit["date"],
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": siblings,
                "xetEnabled": False,
            }
        )

    def route_refs(self) -> None:
        _, _, meta = self._repo()
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in meta["branches"].items()]
        self._send_json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def route_commits(self) -> None:
        repo_type, repo_id, _ = self._repo()
        sha, commit = self._commit(repo_type, repo_id, self.params["rev"])
        history = []
        while True:
            history.append(
                {
                    "id": sha,
                    "title": commit["title"],
                    "message": commit["description"],
                    "date": commit["date"],
                    "authors": [{"user": self.server.user}],
                }
            )
            if not commit["parents"]:
                break
            sha = commit["parents"][0]
            commit = self.server.store.load_commit(repo_type, repo_id, sha)
        self._send_json(history)

    def route_create_branch(self) -> None:
        repo_type, repo_id, meta = self._repo(write=True)
        branch = self.params["branch"]
        start = self._json_body().get("startingPoint") or "main"
        with self.server.store.lock:
            meta = self.server.store.load_repo(repo_type, repo_id)
            if branch in meta["branches"]:
                raise HubError(409, f"Branch {branch} already exists")
            meta["branches"][branch], _ = self._commit(repo_type, repo_id, start)
            self.server.store.save_repo(repo_type, repo_id, meta)
        self._send_json({})

    # -- routes: listing files -----------------------------------------------------------------------
    def route_tree(self) -> None:
        """Children of a folder (or everything below it with recursive=true), folders included."""
        repo_type, repo_id, _ = self._repo()
        sha, commit = self._commit(repo_type, repo_id, self.params["rev"])
        files, folder = commit["files"], self.params.get("path", "").strip("/")
        folders = self._folders(files)
        if folder and folder not in folders:
            raise HubError(404, f"Entry not found: {folder}", "EntryNotFound", {"X-Repo-Commit": sha})
        prefix = folder + "/" if folder else ""
        recursive = self.query.get("recursive", "false").lower() in ("1", "true")
        items = [
            self._folder_item(p, files)
            for p in sorted(folders)
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]
        items += [
            self._file_item(p, e)
            for p, e in files.items()
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]
        self._send_json(items)

    def route_paths_info(self) -> None:
        repo_type, repo_id, _ = self._repo()
        _sha, commit = self._commit(repo_type, repo_id, self.params["rev"])
        raw = b"".join(self._body_chunks()).decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(raw or "{}").get("paths", [])
        else:  # form-encoded: paths=a&paths=b
            paths = parse_qs(raw).get("paths", [])
        files, folders = commit["files"], self._folders(commit["files"])
        items = []
        for path in (p.strip("/") for p in paths):
            if path in files:
                items.append(self._file_item(path, files[path]))
            elif path in folders:
                items.append(self._folder_item(path, files))
        self._send_json(items)

    # -- routes: uploading ---------------------------------------------------------------------------
    def route_preupload(self) -> None:
        repo_type, repo_id, _ = self._repo(write=True)
        _, commit = self._commit(repo_type, repo_id, self.params["rev"])
        answers = []
        for f in self._json_body().get("files", []):
            path = check_repo_path(f["path"])
            lfs = wants_lfs(path, int(f["size"]), base64.b64decode(f.get("sample", "")))
            remote = commit["files"].get(path)  # the client skips files whose oid it already has
            oid = None if remote is None else (remote["sha256"] if remote["lfs"] else remote["oid"])
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answers, "commitOid": None})

    def route_lfs_batch(self) -> None:
        """Git LFS batch API, "basic" transfer: an upload + verify href per object not stored yet."""
        self._repo(write=True)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "The loopback Hub's LFS batch API only uploads")
        base, objects = self._base_url(), []
        for obj in body.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                raise HubError(400, f"Invalid LFS oid {oid!r}")
            if self.server.store.has_blob(oid, size):
                objects.append({"oid": oid, "size": size})  # no actions: already stored
                continue
            ticket = secrets.token_urlsafe(16)
            self.server.upload_tickets[ticket] = (oid, size)
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": {"href": f"{base}/lfs-upload/{oid}?ticket={ticket}"},
                        "verify": {"href": f"{base}/lfs-verify/{oid}"},
                    },
                }
            )
        self._send_json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def route_lfs_upload(self) -> None:
        """PUT of the raw bytes; authorised by the batch's one-time ticket (no token, like S3)."""
        oid = self.params["oid"]
        if self.server.upload_tickets.pop(self.query.get("ticket", ""), None) is None:
            raise HubError(403, "Missing or used upload ticket")
        self.server.store.put_blob(self._body_chunks(), expected_sha256=oid)
        self.server.lfs_uploads.append(oid)
        self._send(200)

    def route_lfs_verify(self) -> None:
        self._require_write()
        body = self._json_body()
        if not self.server.store.has_blob(self.params["oid"], int(body.get("size", -1))):
            raise HubError(404, f"LFS object {self.params['oid']} is not stored with size {body.get('size')}")
        self._send_json({"success": True})

    def route_commit(self) -> None:
        repo_type, repo_id, _ = self._repo(write=True)
        if self.query.get("create_pr") in ("1", "true"):
            raise HubError(400, "The loopback Hub has no pull requests")
        header, operations = {}, []
        for line in b"".join(self._body_chunks()).splitlines():
            if line.strip():
                item = json.loads(line)
                if item["key"] == "header":
                    header = item["value"]
                else:
                    operations.append((item["key"], item["value"]))
        branch = self.params["rev"]
        sha = self.server.store.commit(
            repo_type,
            repo_id,
            branch,
            operations,
            header.get("summary", ""),
            header.get("description", ""),
            header.get("parentCommit"),
        )
        url = f"{self._base_url()}/{URL_PREFIX[repo_type]}{repo_id}/commit/{sha}"
        self._send_json({"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None})

    # -- routes: downloading -------------------------------------------------------------------------
    def route_resolve(self) -> None:
        """The file itself (GET) or its metadata (HEAD); one byte range honoured with 206."""
        repo_type, repo_id, _ = self._repo()
        sha, commit = self._commit(repo_type, repo_id, self.params["rev"])
        entry = commit["files"].get(self.params["path"])
        if entry is None:
            raise HubError(404, f"Entry not found: {self.params['path']}", "EntryNotFound", {"X-Repo-Commit": sha})
        size = entry["size"]
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(self.params['path'].rsplit('/', 1)[-1])}",
        }
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(size)})
        start, end, status = 0, size - 1, 200
        byte_range = self.headers.get("Range")
        if byte_range:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", byte_range.strip())
            if not match or match.groups() == ("", ""):
                raise HubError(400, f"Unsupported Range header {byte_range!r}")
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            else:  # bytes=-N: the last N bytes
                start, end = max(size - int(last), 0), size - 1
            if start >= size or start > end:
                raise HubError(
                    416,
                    f"Range {byte_range} not satisfiable for {size} bytes",
                    headers={"Content-Range": f"bytes */{size}"},
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(self.server.store.blob_path(entry["sha256"]), "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(1 << 20, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


class HubServer(ThreadingHTTPServer):
    """The HTTP server plus what the handlers share: store, token, and logs tests may inspect."""

    daemon_threads = True

    def __init__(
        self,
        data_dir: str | Path,
        port: int = 0,
        token: str | None = None,
        user: str = DEFAULT_USER,
        verbose: bool = False,
        sock=None,
    ):
        # `sock`: an already bound socket to listen on (lets a caller publish the URL before starting)
        super().__init__(("127.0.0.1", port), HubRequestHandler, bind_and_activate=sock is None)
        if sock is not None:
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()
            self.server_activate()
        self.store = HubStore(data_dir)
        self.token, self.user, self.verbose = token, user, verbose
        self.upload_tickets: dict[str, tuple[str, int]] = {}
        self.lfs_uploads: list[str] = []  # sha256 of every object received through an LFS PUT
        self.log: collections.deque = collections.deque(maxlen=100_000)  # (method, path, status)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def serve_in_thread(self) -> Callable[[], None]:
        """Serve from a daemon thread; returns the function that stops it."""
        thread = threading.Thread(target=self.serve_forever, name="loopback-hub", daemon=True)
        thread.start()

        def stop() -> None:
            self.shutdown()
            self.server_close()
            thread.join(timeout=5)

        return stop


def start_hub_server(
    data_dir: str | Path, port: int = 0, token: str | None = None, user: str = DEFAULT_USER
) -> tuple[str, Callable[[], None]]:
    """Start a loopback Hub in a background thread; returns (url, stop)."""
    server = HubServer(data_dir, port=port, token=token, user=user)
    return server.url, server.serve_in_thread()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the URL is printed)")
    parser.add_argument("--data-dir", required=True, help="folder where repos and blobs are kept")
    parser.add_argument(
        "--token",
        default=os.environ.get("HUB_SERVER_TOKEN"),
        help="the one valid token; writes and private reads need it (default: no auth)",
    )
    parser.add_argument("--user", default=DEFAULT_USER, help="the name whoami returns and the default namespace")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    server = HubServer(args.data_dir, port=args.port, token=args.token, user=args.user, verbose=args.verbose)
    print(f"Loopback Hub serving {Path(args.data_dir).resolve()} at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
