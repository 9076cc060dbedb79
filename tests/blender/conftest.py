"""Fixtures for the Blender add-on tests.

Two kinds of tests live here:

* ``test_helpers.py``: the add-on's bpy-free helpers; plain pytest, runs in any venv with numpy
  (and soxr), including the main one.
* ``test_bpy_*.py``: inside the real ``bpy`` module (a separate venv per Blender version, see
  ``tests/blender/run.sh``), skipped where bpy is not importable. They load the add-on from
  ``blender_addon/`` as a real extension (linked into the ``user_default`` extensions repo
  of a scratch ``BLENDER_USER_RESOURCES``), and talk to a real ``v2a-server`` subprocess run
  by the main venv's Python (``V2A_SERVER_PYTHON``, default ``<repo>/.venv/bin/python``) on a
  tiny random-weight model (``V2A_TEST_MODEL_DIR``, default: made once per session).

Timers never fire in the bpy module: tests pump ``jobs.poll_jobs()`` (``jobs.wait_until_idle``).
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADDON_DIR = REPO / "blender_addon"
SHARED_DIR = REPO / "shared"
# foley_protocol for the linked add-on and the bpy-free helper tests (the built zip bundles it
# as a wheel; test_bpy_package checks that path in a Blender process of its own).
if str(SHARED_DIR) not in sys.path:
    sys.path.insert(0, str(SHARED_DIR))
ADDON_ID = "sta_v2a_foley"
ADDON_MODULE = f"bl_ext.user_default.{ADDON_ID}"
HAVE_BPY = importlib.util.find_spec("bpy") is not None
SERVER_READY_TIMEOUT_S = 180.0  # torch import + model load on a busy 2-core machine

if HAVE_BPY:
    # Before bpy is imported: never touch the user's real Blender configuration.
    os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="foley-bpy-user-")


def server_python() -> Path:
    """The Python that runs ``v2a-server`` (the main venv: torch lives there, not here)."""
    return Path(os.environ.get("V2A_SERVER_PYTHON", REPO / ".venv" / "bin" / "python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A ``v2a-server`` subprocess (log in a file); ``stop`` always kills it."""

    def __init__(self, model_dir: Path, log_dir: Path, *extra: str):
        self.model_dir = model_dir
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.log_path = Path(log_dir) / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        command = [str(server_python()), "-m", "v2a_server.commands.serve", "--model",
                   str(self.model_dir), "--bind", self.endpoint, "--threads", "1", *self.extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=str(REPO))
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = SERVER_READY_TIMEOUT_S) -> None:
        """Until the model is loaded (the server logs it) or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log()
            if "v2a_server: ready:" in text:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"v2a-server exited ({self.proc.returncode}):\n{text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"v2a-server not ready after {timeout_s} s:\n{text}")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    stop = kill


# ---- session: the add-on, the model, the server -------------------------------------------


@pytest.fixture(scope="session")
def bpy_module():
    if not HAVE_BPY:
        pytest.skip("bpy is not importable in this venv (see tests/blender/run.sh)")
    import bpy

    return bpy


@pytest.fixture(scope="session")
def addon(bpy_module):
    """The add-on from ``blender_addon/``, enabled as extension ``bl_ext.user_default.<id>``."""
    import addon_utils

    bpy = bpy_module
    repo_dir = Path(bpy.utils.user_resource("EXTENSIONS", path="user_default", create=True))
    link = repo_dir / ADDON_ID
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(ADDON_DIR, target_is_directory=True)
    module = addon_utils.enable(ADDON_MODULE, default_set=True, handle_error=None)
    assert module is not None, f"could not enable {ADDON_MODULE}"

    def disable():
        # Blender 4.5 hangs at exit while an Operator class is still registered.
        if ADDON_MODULE in bpy.context.preferences.addons:
            addon_utils.disable(ADDON_MODULE, default_set=True, handle_error=None)

    atexit.register(disable)
    yield module
    disable()
    link.unlink()


@pytest.fixture(scope="session")
def jobs(addon):
    return importlib.import_module(f"{ADDON_MODULE}.jobs")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random-weight pipeline folder (``V2A_TEST_MODEL_DIR`` or made now)."""
    given = os.environ.get("V2A_TEST_MODEL_DIR")
    if given:
        return Path(given)
    python = server_python()
    if not python.exists():
        pytest.skip(f"no server Python at {python}: set V2A_SERVER_PYTHON to the main venv's")
    out = tmp_path_factory.mktemp("models") / "tiny"
    subprocess.run([str(python), "-m", "v2a_server.cli", "create-model", "--config", "tiny",
                    "--out", str(out)], check=True, cwd=str(REPO), capture_output=True)
    return out


@pytest.fixture(scope="session")
def server(tiny_model, tmp_path_factory):
    """A running tiny-model server shared by the session."""
    proc = ServerProcess(tiny_model, tmp_path_factory.mktemp("server-logs")).start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="session")
def capturing_server(tiny_model, tmp_path_factory):
    """A tiny-model server that reads no files named by clients (like one on another machine):
    the add-on renders every frame itself, never taking the movie fast path."""
    proc = ServerProcess(tiny_model, tmp_path_factory.mktemp("server-logs"),
                         "--no-local-files").start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def own_server(tiny_model, tmp_path):
    """A server of this test alone (to kill, or to configure)."""
    servers = []

    def start(*extra: str) -> ServerProcess:
        proc = ServerProcess(tiny_model, tmp_path, *extra).start()
        servers.append(proc)
        return proc

    yield start
    for proc in servers:
        proc.kill()


# ---- per test: an empty saved file and known preferences ----------------------------------


@pytest.fixture
def prefs(addon, bpy_module):
    """The add-on preferences, set for fast tests, restored afterwards."""
    p = bpy_module.context.preferences.addons[ADDON_MODULE].preferences
    saved = {k: getattr(p, k) for k in ("server_address", "server_public_key", "output_dir",
                                         "steps", "variations", "connect_timeout_s",
                                         "job_timeout_s", "marker_prefix",
                                         "range_variations", "server_reads_movies")}
    p.steps = 2
    p.variations = 1
    p.range_variations = 1
    p.connect_timeout_s = 3.0
    p.job_timeout_s = 120.0
    yield p
    for key, value in saved.items():
        setattr(p, key, value)


@pytest.fixture
def project(addon, jobs, prefs, bpy_module, tmp_path):
    """An empty file saved as ``tmp_path/project.blend`` (so ``//foley/`` is usable)."""
    bpy = bpy_module
    jobs.manager().cancel(reason="next test")
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    path = tmp_path / "project.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    yield path
    jobs.manager().cancel(reason="test ended")


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


def pytest_sessionfinish(session, exitstatus):
    # Belt and braces for the 4.5 exit hang: nothing of ours stays registered.
    if HAVE_BPY and "bpy" in sys.modules:
        import addon_utils
        import bpy

        if ADDON_MODULE in bpy.context.preferences.addons:
            addon_utils.disable(ADDON_MODULE, default_set=True, handle_error=None)
    shutil.rmtree(os.environ.get("BLENDER_USER_RESOURCES", ""), ignore_errors=True) \
        if HAVE_BPY else None
