"""`v2a model pull|list|remove` against a fake hub on 127.0.0.1 (no network).

The fake release is built the way tests/test_convert.py builds one (its helpers, imported) and
served under the manifest's own repository ids and paths, so the manifest's defaults are what is
exercised; only the UNet/scheduler configs (built in at the real size) are moved with ``--repo``.
Each pull runs in a subprocess (huggingface_hub reads HF_ENDPOINT/HF_HOME when imported) whose
audit hook records and refuses any connection or name lookup that is not loopback.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fake_hub import FakeHub
from tests.test_convert import official_audioldm, official_cavp, official_release, tiny_source_config

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "saved/STA-V2A/best/pytorch_model_2.bin"
CAVP = "diff_foley_ckpt/cavp_epoch66.ckpt"
# huggingface_hub writes what it receives in 10 MiB chunks, so a cut resumes from the last whole one.
HUB_CHUNK = 10 * 1024 * 1024
TINY = ["--repo", "prior=fake/tta-tiny", "--vae-norm-groups", "4", "--cavp-image-size", "32"]

# Runs `v2a` with an audit hook: a connection or DNS lookup that is not loopback is written to
# $GUARD_LOG and refused, so a test fails on any attempt to leave the machine.
GUARD = r"""
import ipaddress, os, sys
def _loopback(host):
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
def _guard(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    elif event == "socket.getaddrinfo" and args[0] is not None:
        host = args[0]
    else:
        return
    if not _loopback(host):
        with open(os.environ["GUARD_LOG"], "a") as f:
            f.write(f"{event} {args[1] if event == 'socket.connect' else args[0]}\n")
        raise ConnectionRefusedError(f"test guard: {host} is not loopback")
sys.addaudithook(_guard)
from v2a_server.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _bytes_of(save) -> bytes:
    buf = io.BytesIO()
    save(buf)
    return buf.getvalue()


def _folder_files(save_to, tmp: Path, prefix: str) -> dict[str, bytes]:
    save_to(tmp)
    return {f"{prefix}{p.relative_to(tmp).as_posix()}": p.read_bytes() for p in tmp.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def fake_repos(tmp_path_factory):
    """The tiny release's files under the manifest's repository ids and paths."""
    from v2a_server.configs import FOLEY_WORDS, build_pipeline
    from v2a_server.models.text import build_word_tokenizer

    torch.set_num_threads(2)
    pipe = build_pipeline(tiny_source_config(), seed=11)
    tmp = tmp_path_factory.mktemp("fake-repos")
    summary = {"text_encoder_name": "mt5-tiny", "scheduler_name": "sched-tiny", "unet_model_name": "tta-tiny",
               "prefix": ""}
    text = _folder_files(pipe.text_encoder.config.save_pretrained, tmp / "text", "")
    text.update(_folder_files(build_word_tokenizer(FOLEY_WORDS).save_pretrained, tmp / "tok", ""))
    text.pop("special_tokens_map.json", None)  # optional in the manifest: its absence is exercised
    return {
        "y-ren16/STAV2A": {
            "saved/STA-V2A/summary.jsonl": (json.dumps(summary) + "\n").encode(),
            WEIGHTS: _bytes_of(lambda f: torch.save(official_release(pipe), f)),
        },
        # Diff-Foley's checkpoint also holds the unused audio branch: here 12 MB of it, so that
        # the file is big enough for a resumed download (more than one hub chunk).
        "SimianLuo/Diff-Foley": {CAVP: _bytes_of(lambda f: torch.save(
            {"state_dict": {**official_cavp(pipe), "module.spec_encoder.pad": torch.zeros(3_000_000)}}, f))},
        "cvssp/audioldm": {
            **_folder_files(pipe.vae.save_pretrained, tmp / "vae", "vae/"),
            **_folder_files(pipe.vocoder.save_pretrained, tmp / "vocoder", "vocoder/"),
        },
        "google/mt5-large": {k: v for k, v in text.items() if not k.endswith((".safetensors", ".bin"))},
        "fake/tta-tiny": {
            **_folder_files(pipe.unet.save_config, tmp / "unet", "unet/"),
            **_folder_files(pipe.scheduler.save_config, tmp / "sched", "scheduler/"),
        },
        "_audioldm_ckpt": {"audioldm-s-full.ckpt": _bytes_of(lambda f: torch.save(
            {"state_dict": official_audioldm(pipe, 0.5)}, f))},
    }


class Env:
    """A fresh home (HOME, XDG_CACHE_HOME, HF_HOME, TMPDIR inside it) and a way to run `v2a`."""

    def __init__(self, tmp_path: Path, endpoint: str):
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.guard_log = tmp_path / "guard.log"
        pythonpath = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "shared"), os.environ.get("PYTHONPATH", "")])
        drop = ("HF_", "HUGGING", "V2A_", "XDG_", "TRANSFORMERS_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        self.vars = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
        self.vars.update(
            HOME=str(self.home), XDG_CACHE_HOME=str(self.home / ".cache"),
            HF_HOME=str(self.home / ".cache" / "huggingface"), TMPDIR=str(self.home / "tmp"),
            HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1", GUARD_LOG=str(self.guard_log),
            PYTHONPATH=pythonpath, OMP_NUM_THREADS="1", NO_PROXY="127.0.0.1,localhost",
        )
        (self.home / "tmp").mkdir()

    def v2a(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
        env = dict(self.vars, **extra_env)
        return subprocess.run([sys.executable, "-c", GUARD, *args], cwd=self.work, env=env,
                              capture_output=True, text=True, timeout=600)

    def snapshot(self) -> dict[str, tuple]:
        out = {}
        for root in (self.home, self.work):
            for p in root.rglob("*"):
                st = p.lstat()
                out[str(p)] = (p.is_dir(), st.st_size, st.st_mtime_ns)
        return out

    @property
    def models(self) -> Path:
        return self.home / ".cache" / "v2a" / "models"

    def assert_stayed_on_loopback(self) -> None:
        assert not self.guard_log.exists(), self.guard_log.read_text()


def serve(fake_repos) -> FakeHub:
    return FakeHub({k: v for k, v in fake_repos.items() if not k.startswith("_")})


def test_pull_resumes_a_dropped_download_installs_and_generates(fake_repos, tmp_path):
    from v2a_server.synth import write_mp4

    with serve(fake_repos) as hub:
        env = Env(tmp_path, hub.endpoint)
        hub.drop_once[("SimianLuo/Diff-Foley", CAVP)] = HUB_CHUNK + 4096
        before = env.snapshot()
        run = env.v2a("model", "pull", "sta-v2a", *TINY)
        assert run.returncode == 0, run.stderr
        print(run.stdout, run.stderr[-3000:])
        after = env.snapshot()
        # The CAVP checkpoint was cut off once, and the second GET asked for the rest only.
        assert hub.gets(CAVP) == [None, f"bytes={HUB_CHUNK}-"]
        size = len(fake_repos["y-ren16/STAV2A"][WEIGHTS])
        assert "Trying to resume download" in run.stderr
        # Only the two caches changed.
        allowed = (str(env.home / ".cache" / "huggingface"), str(env.models.parent))
        changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        outside = sorted(p for p in changed if not p.startswith(allowed) and p != str(env.home / ".cache"))
        assert outside == []
        env.assert_stayed_on_loopback()

        installed = env.models / "sta-v2a"
        record = json.loads((installed / "v2a_model.json").read_text())
        files = {f["part"]: f for f in record["files"]}
        assert files["weights"]["check"] == "size %d, sha256 = the hub" % size
        assert files["summary"]["check"].endswith("git sha1 = the hub")
        assert "special_tokens_map" not in files  # optional and absent
        assert [p.name for p in env.models.iterdir()] == ["sta-v2a"]  # no staging left behind
        # the server names what the pulled model knows (hello_reply / status_reply model_scope)
        from v2a_server.model_card import STA_V2A_SCOPE, read_model_card

        assert read_model_card(installed).scope == STA_V2A_SCOPE

        # A second pull of the same name is refused; `list` shows both models.
        again = env.v2a("model", "pull", "sta-v2a", *TINY)
        assert again.returncode == 2 and "already installed" in again.stderr
        listed = env.v2a("model", "list")
        assert listed.returncode == 0 and "default" in listed.stdout and "sta-v2a" in listed.stdout

    # Found by name: `v2a generate --model sta-v2a` (no hub running any more) at a tiny size.
    video = tmp_path / "clip.mp4"
    frames = (torch.rand(8, 32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    write_mp4(video, frames, 8.0)
    out = tmp_path / "take.wav"
    gen = env.v2a("generate", str(video), "--model", "sta-v2a", "--caption", "a ball bouncing",
                  "--out", str(out), "--steps", "2", "--sampler", "ddpm", "--seed", "1",
                  MPLCONFIGDIR=str(tmp_path / "mpl"))
    assert gen.returncode == 0, gen.stderr
    assert out.stat().st_size > 1000
    env.assert_stayed_on_loopback()

    # v2a-server resolves --model with the same model_store.resolve_model_dir.
    check = subprocess.run(
        [sys.executable, "-c", "from v2a_server.model_store import resolve_model_dir as r; print(r('sta-v2a'))"],
        env=env.vars, capture_output=True, text=True, cwd=env.work)
    assert check.stdout.strip() == str(installed), check.stderr

    removed = env.v2a("model", "remove", "sta-v2a")
    assert removed.returncode == 0 and not installed.exists()
    refused = env.v2a("model", "remove", "default")
    assert refused.returncode == 2 and "cannot be removed" in refused.stderr


def test_a_missing_file_names_it_and_says_what_to_do(fake_repos, tmp_path):
    repos = {k: dict(v) for k, v in fake_repos.items()}
    del repos["y-ren16/STAV2A"][WEIGHTS]
    with serve(repos) as hub:
        env = Env(tmp_path, hub.endpoint)
        run = env.v2a("model", "pull", "sta-v2a", *TINY)
    assert run.returncode == 2
    err = run.stderr
    print(err)
    assert f"weights: {hub.endpoint}/y-ren16/STAV2A (revision main), file" in err
    assert "not in the repository (HTTP 404)" in err and "--file weights=PATH_IN_REPO" in err
    assert "--from-dir DIR" in err and f"paths tried: {WEIGHTS}, " in err
    # Every path was looked up before any download: no GET at all, nothing installed.
    assert not [r for r in hub.requests if r[0] == "GET"]
    assert not (env.models / "sta-v2a").exists()
    env.assert_stayed_on_loopback()


def test_a_refused_token_is_reported_as_such(fake_repos, tmp_path):
    with serve(fake_repos) as hub:
        hub.refused_token = "hf_expired"
        env = Env(tmp_path, hub.endpoint)
        run = env.v2a("model", "pull", "sta-v2a", *TINY, HF_TOKEN="hf_expired")
    assert run.returncode == 2
    print(run.stderr)
    assert "summary: " in run.stderr and "saved/STA-V2A/summary.jsonl" in run.stderr
    assert "refused your token (HTTP 401 Unauthorized)" in run.stderr and "unset HF_TOKEN" in run.stderr
    env.assert_stayed_on_loopback()


def test_offline_without_the_files_says_so(tmp_path):
    env = Env(tmp_path, "http://127.0.0.1:9")  # nothing listens there; offline mode never asks
    run = env.v2a("model", "pull", "sta-v2a", *TINY, HF_HUB_OFFLINE="1")
    assert run.returncode == 2
    assert "summary: " in run.stderr and "HF_HUB_OFFLINE is set and the file is not in the cache" in run.stderr
    env.assert_stayed_on_loopback()


def test_no_network_says_so(tmp_path):
    env = Env(tmp_path, "http://127.0.0.1:9")  # the discard port: nothing answers
    run = env.v2a("model", "pull", "sta-v2a", *TINY)
    assert run.returncode == 2
    assert "summary: http://127.0.0.1:9/y-ren16/STAV2A (revision main), file saved/STA-V2A/summary.jsonl" in run.stderr
    assert "cannot reach http://127.0.0.1:9" in run.stderr and "--from-dir DIR" in run.stderr
    env.assert_stayed_on_loopback()


def test_from_dir_with_the_original_audioldm_checkpoint(fake_repos, tmp_path):
    """Files a user already has, flat in one folder; AudioLDM as Zenodo's audioldm-s-full.ckpt."""
    have = tmp_path / "have"
    for repo in ("y-ren16/STAV2A", "SimianLuo/Diff-Foley", "google/mt5-large", "_audioldm_ckpt"):
        for path, data in fake_repos[repo].items():
            target = have / Path(path).name  # flat: found by file name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    for path, data in fake_repos["fake/tta-tiny"].items():  # configs at their repo paths
        (have / path).parent.mkdir(parents=True, exist_ok=True)
        (have / path).write_bytes(data)
    env = Env(tmp_path, "http://127.0.0.1:9")
    run = env.v2a("model", "pull", "sta-v2a", "--from-dir", str(have), "--name", "mine", *TINY,
                  HF_HUB_OFFLINE="1")
    assert run.returncode == 0, run.stderr
    assert "audioldm: " in run.stdout and "audioldm-s-full.ckpt" in run.stdout
    assert (env.models / "mine" / "model_index.json").is_file()
    env.assert_stayed_on_loopback()


# ---- in-process: the manifest's overrides and the name lookup -----------------------------------------


def test_overrides_move_sources_and_files_and_are_checked():
    from v2a_server.hub.manifest import STA_V2A, ManifestOverrides

    moved = ManifestOverrides.parse(["release=me/stav2a@v1"], ["weights=ckpt/model.bin"], ["cavp=" + "a" * 64]).apply(STA_V2A)
    assert moved.source("release").describe() == "me/stav2a@v1"
    assert moved.part("weights").candidates == ("ckpt/model.bin",)
    assert moved.part("cavp").sha256 == "a" * 64
    assert STA_V2A.source("release").repo_id == "y-ren16/STAV2A"  # the manifest itself is untouched
    with pytest.raises(ValueError, match="--repo: nope is not one of"):
        ManifestOverrides.parse(["nope=x/y"]).apply(STA_V2A)
    with pytest.raises(ValueError, match="--sha256 cavp=…: expected 64 hex digits"):
        ManifestOverrides.parse(sha256=["cavp=123"]).apply(STA_V2A)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        ManifestOverrides.parse(files=["weights"])


def test_an_unknown_model_name_says_how_to_install_it(tmp_path, monkeypatch):
    from v2a_server.model_store import resolve_model_dir

    monkeypatch.setenv("V2A_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"'sta-v2a' is neither a pipeline folder nor an installed model "
                       r"\(installed: default, .*`v2a model pull sta-v2a`"):
        resolve_model_dir("sta-v2a")


def test_a_download_that_cannot_fit_is_refused_before_it_starts(tmp_path):
    from v2a_server.hub.fetch import PullError, RemoteFile, check_disk_space
    from v2a_server.hub.manifest import STA_V2A

    part = STA_V2A.part("weights")
    exabyte = RemoteFile(part, STA_V2A.source("release"), part.path, 10**18, None, "0" * 40)
    with pytest.raises(PullError, match=r"not enough disk space: .* GB are needed in .*set HF_HOME \(downloads\) "
                       r"and V2A_HOME"):
        check_disk_space([exabyte], tmp_path / "models", install_bytes=10**18)
