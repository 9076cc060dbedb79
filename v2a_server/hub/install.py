"""``v2a model pull|list|remove``: fetch a manifest's files, convert them, install a named folder.

Installed models live in ``model_store.installed_models_dir()`` (``$V2A_HOME/models/<name>``);
the downloaded source files stay in the Hugging Face cache, so a second pull (or another tool)
reuses them. A pull builds the model in a staging folder beside the installed ones and renames
it into place only when everything converted, so a failed pull leaves no half-installed model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from v2a_server.hub.fetch import (
    GB,
    FetchedFile,
    PullError,
    builtin_file,
    cached_offline,
    check_disk_space,
    download,
    find_in_dir,
    hub_endpoint,
    hub_offline,
    link_into,
    locate_remote,
    verify,
)
from v2a_server.hub.manifest import ModelManifest
from v2a_server.model_store import (
    DEFAULT_MODEL_DIR,
    INSTALL_RECORD,
    MODEL_NAME,
    installed_models,
    installed_models_dir,
)

Log = Callable[[str], None]


@dataclass
class PullOptions:
    name: str | None = None  # install under this name (default: the manifest's)
    from_dir: Path | None = None  # files the user already has; the rest is downloaded
    replace: bool = False  # replace an installed model of the same name
    force_download: bool = False
    vae_norm_groups: int | None = None  # converter options (None = the release's values)
    cavp_image_size: int | None = None
    allow_pickle: bool = False


def _check_name(name: str) -> None:
    if name == "default":
        raise PullError("'default' is the embedded model's name; install under another --name")
    if not MODEL_NAME.match(name):
        raise PullError(f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-'")


def fetch_all(manifest: ModelManifest, options: PullOptions, staging: Path, log: Log) -> tuple[dict, dict]:
    """Every part on this machine and verified → ({part key: FetchedFile}, {source key: whole file})."""
    fetched: dict[str, FetchedFile] = {}
    whole: dict[str, Path] = {}
    remote_parts = []
    for source in manifest.sources:
        if options.from_dir and source.whole_file and (options.from_dir / source.whole_file).is_file():
            whole[source.key] = options.from_dir / source.whole_file
            log(f"{source.key}: {whole[source.key]} (from --from-dir, instead of {source.describe()})")
            continue
        for part in manifest.parts_of(source.key):
            if source.builtin:
                fetched[part.key] = builtin_file(part, source, staging)
                continue
            found = find_in_dir(options.from_dir, part, source, manifest) if options.from_dir else None
            if found:
                path_in_repo, path = found
                origin = f"--from-dir {path}"
                check, sha = verify(path, part, origin)
                fetched[part.key] = FetchedFile(part, path, path_in_repo, origin, path.stat().st_size, check, sha)
                log(f"{part.key}: {path} ({check})")
            else:
                remote_parts.append((part, source))
    if not remote_parts:
        return fetched, whole
    if hub_offline():
        for part, source in remote_parts:
            found = cached_offline(part, source)
            if found is None:
                continue
            path_in_repo, path = found
            origin = f"the cache ({source.describe()}, offline)"
            check, sha = verify(path, part, origin)
            fetched[part.key] = FetchedFile(part, path, path_in_repo, origin, path.stat().st_size, check, sha)
            log(f"{part.key}: {path_in_repo} from {origin} ({check})")
        return fetched, whole
    log(f"looking up {len(remote_parts)} files on {hub_endpoint()}")
    remotes = [r for r in (locate_remote(part, source) for part, source in remote_parts) if r is not None]
    # The converted model holds about as many bytes as the weights it is made from.
    install_bytes = sum(r.size or 0 for r in remotes) + sum(f.size for f in fetched.values()) + sum(
        p.stat().st_size for p in whole.values())
    check_disk_space(remotes, installed_models_dir(), install_bytes)
    for remote in remotes:
        origin = f"{hub_endpoint()}/{remote.source.repo_id}@{remote.source.revision}:{remote.path}"
        log(f"{remote.part.key}: {origin} ({(remote.size or 0) / GB:.2f} GB)")
        path = download(remote, force=options.force_download)
        check, sha = verify(path, remote.part, origin, remote.size, remote.etag)
        fetched[remote.part.key] = FetchedFile(remote.part, path, remote.path, origin, path.stat().st_size, check,
                                               sha, remote.commit)
        log(f"{remote.part.key}: verified ({check})")
    return fetched, whole


def convert(manifest: ModelManifest, fetched: dict, whole: dict, staging: Path, options: PullOptions, log: Log):
    """The release converter (``v2a convert``) on the fetched files → staging/pipeline."""
    from v2a_server.convert import ConversionError, convert_release

    def folder_of(source_key: str) -> Path:
        files = [fetched[p.key] for p in manifest.parts_of(source_key) if p.key in fetched]
        return link_into(staging / "inputs" / source_key, files)

    extra = {}
    if options.vae_norm_groups is not None:
        extra["vae_norm_num_groups"] = options.vae_norm_groups
    if options.cavp_image_size is not None:
        extra["cavp_image_size"] = options.cavp_image_size
    out = staging / "pipeline"
    log("converting")
    try:
        report = convert_release(
            fetched["summary"].path, fetched["weights"].path, out,
            audioldm=whole.get("audioldm") or folder_of("audioldm"),
            unet_config=fetched["unet_config"].path,
            scheduler_config=fetched["scheduler_config"].path,
            text_encoder=folder_of("text"),
            cavp=fetched["cavp"].path,
            allow_pickle=options.allow_pickle,
            **extra,
        )
    except (ConversionError, FileNotFoundError, ValueError) as exc:
        raise PullError(f"the files were fetched but do not convert:\n{exc}") from None
    log(report.format())
    return out, report


def pull(manifest: ModelManifest, options: PullOptions, log: Log = print) -> Path:
    """Fetch, verify, convert and install; → the installed folder."""
    name = options.name or manifest.name
    _check_name(name)
    root = installed_models_dir()
    target = root / name
    if target.exists() and not options.replace:
        raise PullError(f"{name} is already installed at {target}; `v2a model remove {name}` first, or pass --replace")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=root))
    try:
        fetched, whole = fetch_all(manifest, options, staging, log)
        out, report = convert(manifest, fetched, whole, staging, options, log)
        record = {
            "name": name,
            "model": manifest.name,
            "description": manifest.description,
            "scope": manifest.scope,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sources": {s.key: s.describe() for s in manifest.sources},
            "files": [f.record() for f in fetched.values()] + [
                {"source": key, "path": str(path), "origin": "--from-dir"} for key, path in whole.items()],
            "converter_notes": list(report.notes),
        }
        (out / INSTALL_RECORD).write_text(json.dumps(record, indent=1))
        if target.exists():
            target.rename(staging / "replaced")
        out.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"installed {name} at {target}; use it with `v2a-server --model {name}` or `v2a generate --model {name}`")
    return target


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def list_models() -> list[dict]:
    """The embedded model and every installed one: name, folder, size, scope."""
    rows = []
    if (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        rows.append({"name": "default", "path": str(DEFAULT_MODEL_DIR), "bytes": folder_bytes(DEFAULT_MODEL_DIR),
                     "scope": "embedded (ships in the package; see docs/default-model.md)"})
    for name, folder in installed_models().items():
        record_file = folder / INSTALL_RECORD
        record = json.loads(record_file.read_text()) if record_file.is_file() else {}
        rows.append({"name": name, "path": str(folder), "bytes": folder_bytes(folder),
                     "scope": record.get("scope", "installed by hand (no install record)"),
                     "installed_at": record.get("installed_at")})
    return rows


def remove(name: str) -> Path:
    if name == "default":
        raise PullError("the embedded default model ships inside the package and cannot be removed")
    installed = installed_models()
    if name not in installed:
        names = ", ".join(installed) or "none"
        raise PullError(f"no installed model named {name!r} in {installed_models_dir()} (installed: {names})")
    shutil.rmtree(installed[name])
    return installed[name]
