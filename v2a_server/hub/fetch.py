"""Getting each file of a manifest onto this machine, checked: from a folder the user already has
(``--from-dir``), from the Hugging Face Hub (``huggingface_hub``: its cache, HF_ENDPOINT,
HF_HOME, HF_HUB_OFFLINE and tokens, resumed on dropped connections, progress bars), or written
from the built-in configs. Every failure becomes a ``PullError`` that names the file, where it
was looked for, and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from v2a_server.hub.manifest import ModelManifest, Part, Source

GB = 1024**3


class PullError(RuntimeError):
    """A pull failed; the message says which file, from where, and what to do."""


@dataclass
class FetchedFile:
    part: Part
    path: Path  # the file on this machine
    repo_path: str  # where it sits in its source (the layout converters expect)
    origin: str  # where it came from, for messages and the install record
    size: int
    check: str  # how it was verified
    sha256: str | None = None
    commit: str | None = None

    def record(self) -> dict:
        return {"part": self.part.key, "path": self.repo_path, "origin": self.origin, "commit": self.commit,
                "size": self.size, "sha256": self.sha256, "check": self.check}


# ---- the Hub -----------------------------------------------------------------------------------------


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _where(source: Source, path: str) -> str:
    return f"{hub_endpoint()}/{source.repo_id} (revision {source.revision}), file {path}"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def explain(exc: BaseException, part: Part, source: Source, path: str) -> PullError:
    """Turn a huggingface_hub / OS error into what the user reads: file, place, remedy."""
    from huggingface_hub import errors

    try:  # the HTTP client huggingface_hub 2.x uses; 1.x used httpx
        import httpx2
    except ImportError:
        import httpx as httpx2

    where = f"{part.key}: {_where(source, path)}"
    override = f"--repo {source.key}=REPO_ID[@REVISION] or --file {part.key}=PATH_IN_REPO"
    for err in _chain(exc):
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return PullError(f"{where}: the disk is full (writing into {hub_cache_dir()}). Free some space, or "
                             "point HF_HOME at a larger disk, then run the same command again.")
        if isinstance(err, errors.GatedRepoError):
            return PullError(f"{where}: {source.repo_id} is gated. Accept its terms at "
                             f"{hub_endpoint()}/{source.repo_id} while logged in, then log in here "
                             "(`hf auth login`, or set HF_TOKEN) and run the command again.")
        if isinstance(err, errors.RevisionNotFoundError):
            return PullError(f"{where}: revision {source.revision!r} does not exist in {source.repo_id}. "
                             f"Pass --repo {source.key}={source.repo_id}@REVISION.")
        if isinstance(err, errors.RepositoryNotFoundError):
            return PullError(f"{where}: the repository was not found (HTTP {err.response.status_code}), or it is "
                             "private and no accepted token was sent. Check the name (" + override + ") and "
                             "your token (HF_TOKEN, or `hf auth login`).")
        if isinstance(err, errors.RemoteEntryNotFoundError):
            return PullError(f"{where}: not in the repository (HTTP 404). This path is "
                             f"{'a checked' if part.verified else 'an unverified'} name in the manifest; if the "
                             f"file lives elsewhere pass {override}, or download it yourself and pass --from-dir DIR.")
        if isinstance(err, errors.HfHubHTTPError) and err.response is not None:
            code = err.response.status_code
            if code == 401:
                return PullError(f"{where}: the hub refused your token (HTTP 401 Unauthorized). HF_TOKEN, or the "
                                 "token saved by `hf auth login`, is invalid or expired: make a new one at "
                                 f"{hub_endpoint()}/settings/tokens, or unset HF_TOKEN to download public files without one.")
            if code == 403:
                return PullError(f"{where}: forbidden (HTTP 403): your token lacks the permission to read this "
                                 "repository. Use a token with read access (HF_TOKEN, or `hf auth login`).")
            if code >= 500 or code == 429:
                return PullError(f"{where}: the hub answered HTTP {code} (busy or down). Run the same command "
                                 "again later: files already downloaded are kept in the cache.")
            return PullError(f"{where}: HTTP {code}: {str(err).strip().splitlines()[0]}")
        if isinstance(err, errors.OfflineModeIsEnabled) or (
            isinstance(err, errors.LocalEntryNotFoundError) and hub_offline()
        ):
            return PullError(f"{where}: HF_HUB_OFFLINE is set and the file is not in the cache "
                             f"({hub_cache_dir()}). Unset HF_HUB_OFFLINE to download it, or pass --from-dir DIR "
                             "with the file.")
        if isinstance(err, (httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError)):
            return PullError(f"{where}: cannot reach {hub_endpoint()} ({err}). Check the network or proxy "
                             "(HTTPS_PROXY); for a mirror set HF_ENDPOINT; or download the file on another "
                             "machine and pass --from-dir DIR. Finished files are kept in the cache.")
        if isinstance(err, OSError) and "Consistency check failed" in str(err):
            return PullError(f"{where}: the download was cut short ({str(err).splitlines()[0]}). Run the same "
                             "command again; finished files are kept in the cache.")
    for err in _chain(exc):
        if isinstance(err, errors.LocalEntryNotFoundError):
            return PullError(f"{where}: cannot reach {hub_endpoint()} and the file is not in the cache "
                             f"({err}). Check the network, or pass --from-dir DIR with the file.")
    return PullError(f"{where}: {type(exc).__name__}: {exc}")


@dataclass
class RemoteFile:
    """A part found on the hub: which of its candidate paths exists, its size, etag and commit."""

    part: Part
    source: Source
    path: str
    size: int | None
    etag: str | None
    commit: str | None


def locate_remote(part: Part, source: Source) -> RemoteFile | None:
    """HEAD each candidate path until one exists (so every 401/404 shows before any download);
    None for an optional part that is not there."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import RemoteEntryNotFoundError

    for path in part.candidates:
        url = hf_hub_url(source.repo_id, path, revision=source.revision)
        try:
            meta = get_hf_file_metadata(url)
        except RemoteEntryNotFoundError as exc:
            if path == part.candidates[-1]:
                if part.optional:
                    return None
                tried = ", ".join(part.candidates)
                error = explain(exc, part, source, part.path)
                raise PullError(f"{error} (paths tried: {tried})") from None
            continue
        except Exception as exc:
            raise explain(exc, part, source, path) from None
        return RemoteFile(part, source, path, meta.size, meta.etag, meta.commit_hash)
    raise AssertionError("a part has at least one path")


def download(remote: RemoteFile, force: bool = False) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(remote.source.repo_id, remote.path, revision=remote.source.revision,
                                    force_download=force))
    except Exception as exc:
        raise explain(exc, remote.part, remote.source, remote.path) from None


def cached_offline(part: Part, source: Source) -> tuple[str, Path] | None:
    """With HF_HUB_OFFLINE: the first candidate path that the cache holds."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for path in part.candidates:
        try:
            return path, Path(hf_hub_download(source.repo_id, path, revision=source.revision))
        except LocalEntryNotFoundError as exc:
            last = exc
    if part.optional:
        return None
    raise explain(last, part, source, part.path) from None


def is_cached(remote: RemoteFile) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(remote.source.repo_id, remote.path, revision=remote.commit or remote.source.revision)
    return isinstance(found, str)


def check_disk_space(remotes: list[RemoteFile], install_dir: Path, install_bytes: int) -> None:
    """Refuse before downloading when the downloads plus the converted model cannot fit."""
    need = {}
    missing = sum(r.size or 0 for r in remotes if not is_cached(r))
    for folder, size in ((hub_cache_dir(), missing), (install_dir, install_bytes)):
        probe = folder
        while not probe.exists():
            probe = probe.parent
        dev = probe.stat().st_dev
        free, total_need, names = need.get(dev, (shutil.disk_usage(probe).free, 0, []))
        need[dev] = (free, total_need + size, names + [str(folder)])
    for free, size, names in need.values():
        if size > free:
            raise PullError(
                f"not enough disk space: {size / GB:.1f} GB are needed in {' and '.join(names)} "
                f"(downloads {missing / GB:.1f} GB, converted model about {install_bytes / GB:.1f} GB), "
                f"{free / GB:.1f} GB are free. Free some space, or set HF_HOME (downloads) and V2A_HOME "
                "(installed models) to a larger disk."
            )


# ---- checks --------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git gives a file: what the hub's ETag is for a file not stored in LFS."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_hex(text: str | None, length: int) -> bool:
    return bool(text) and len(text) == length and all(c in "0123456789abcdef" for c in text)


def verify(path: Path, part: Part, origin: str, size: int | None = None, etag: str | None = None) -> tuple[str, str | None]:
    """Check size and hash against the manifest and the hub's metadata; → (how, sha256)."""
    actual = path.stat().st_size
    for expected, what in ((part.size, "the manifest"), (size, "the hub")):
        if expected is not None and actual != expected:
            raise PullError(f"{part.key}: {origin}: {path} has {actual} bytes, {what} says {expected}. The file is "
                            f"incomplete or a different version: delete it (or pass --force-download) and pull again.")
    checks, sha256 = [f"size {actual}"], None
    if part.sha256 or _is_hex(etag, 64):
        sha256 = file_sha256(path)
        for expected, what in ((part.sha256, "the manifest"), (etag if _is_hex(etag, 64) else None, "the hub")):
            if expected and sha256 != expected:
                raise PullError(f"{part.key}: {origin}: sha256 of {path} is {sha256}, {what} says {expected}. The "
                                "file is corrupt or a different version: pass --force-download to fetch it again "
                                f"(or --sha256 {part.key}=HEX if you trust this one).")
            if expected:
                checks.append(f"sha256 = {what}")
    elif _is_hex(etag, 40):
        blob = git_blob_sha1(path)
        if blob != etag:
            raise PullError(f"{part.key}: {origin}: git hash of {path} is {blob}, the hub says {etag}; pass "
                            "--force-download to fetch it again.")
        checks.append("git sha1 = the hub")
    return ", ".join(checks), sha256


# ---- one part, from wherever it is -----------------------------------------------------------------------


def find_in_dir(folder: Path, part: Part, source: Source, manifest: ModelManifest) -> tuple[str, Path] | None:
    """A part in a user's folder: at its repo path, under the repo id, or by a file name no other
    part shares (``config.json`` alone would be ambiguous)."""
    names = [Path(c).name for p in manifest.parts for c in p.candidates]
    for path in part.candidates:
        places = [folder / path]
        if source.repo_id:
            places.append(folder / source.repo_id / path)
        if names.count(Path(path).name) == 1:
            places.append(folder / Path(path).name)
        for place in places:
            if place.is_file():
                return path, place
    return None


def builtin_file(part: Part, source: Source, staging: Path) -> FetchedFile:
    """The UNet / scheduler configs of a named config (v2a_server.configs), written as diffusers does."""
    from v2a_server.configs import get_config

    cfg = get_config(source.builtin_config)
    contents = {
        "unet/config.json": {"_class_name": "UNet2DConditionModel", **cfg["unet"]},
        "scheduler/scheduler_config.json": {"_class_name": "DDPMScheduler", **cfg["scheduler"]},
    }
    if part.path not in contents:
        raise PullError(f"{part.key}: the builtin source has no {part.path}; pass --repo {source.key}=REPO_ID")
    out = staging / "builtin" / source.key / part.path
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(contents[part.path], indent=1))
    return FetchedFile(part, out, part.path, f"builtin {source.builtin_config} config", out.stat().st_size,
                       "written here")


def link_into(folder: Path, files: list[FetchedFile]) -> Path:
    """A folder with each file at its repo path (links, or copies where links are not allowed),
    for the converters that take a folder (AutoConfig, AutoTokenizer, from_pretrained)."""
    for f in files:
        target = folder / f.repo_path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(f.path.resolve(), target)
        except OSError:
            shutil.copyfile(f.path, target)
    return folder
