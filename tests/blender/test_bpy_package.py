"""The built extension zip: wheels for every platform and Python, installs into bpy with
``package_install_files``, enables, and imports its *bundled* wheels (the venv's copies of
zmq, msgpack, soxr and foley_protocol are hidden from the Blender process)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.blender.conftest import ADDON_ID, HAVE_BPY, REPO

pytestmark = pytest.mark.skipif(not HAVE_BPY, reason="bpy is not importable in this venv")


def _build_tool():
    spec = importlib.util.spec_from_file_location("build_extension",
                                                  REPO / "tools" / "build_extension.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def extension_zip() -> Path:
    """``FOLEY_EXTENSION_ZIP``, or built now into build/extension (wheels cached there)."""
    given = os.environ.get("FOLEY_EXTENSION_ZIP")
    if given:
        return Path(given)
    out = REPO / "build" / "extension"
    subprocess.run([sys.executable, str(REPO / "tools" / "build_extension.py"), "--out",
                    str(out)], check=True, cwd=str(REPO), timeout=900)
    [zip_path] = sorted(out.glob(f"{ADDON_ID}-*.zip"))
    return zip_path


def test_zip_holds_every_platform_and_python(extension_zip):
    tool = _build_tool()
    with zipfile.ZipFile(extension_zip) as zf:
        names = zf.namelist()
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    wheels = sorted(Path(n).name for n in names if n.startswith("wheels/") and n.endswith(".whl"))
    assert tool.missing_wheels(wheels, ["pyzmq", "msgpack", "soxr", "foley-protocol"]) == []
    for platform in ("linux-x64", "windows-x64", "macos-arm64", "macos-x64"):
        for python in ("3.11", "3.13"):
            for package in ("pyzmq", "msgpack", "soxr"):
                assert any(tool.wheel_fits(w, platform, python) for w in wheels
                           if w.startswith(package + "-")), (package, platform, python)
    assert sorted(Path(w).name for w in manifest["wheels"]) == wheels
    assert set(manifest["platforms"]) == {"linux-x64", "windows-x64", "macos-arm64", "macos-x64"}
    assert set(manifest["permissions"]) == {"network", "files"}
    assert manifest["blender_version_min"] == "4.2.0" and manifest["id"] == ADDON_ID
    assert "__init__.py" in names and not any("__pycache__" in n for n in names)


INSTALL_SCRIPT = r"""
import importlib.abc, importlib.machinery, json, os, sys
import bpy

site = bpy.utils.user_resource(
    "EXTENSIONS", path=f".local/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")
BUNDLED = {"zmq", "msgpack", "soxr", "foley_protocol"}

class OnlyBundled(importlib.abc.MetaPathFinder):
    # The venv also has these packages: make the Blender process see only the extension's.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in BUNDLED or "." in name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [site])
        if spec is None:
            raise ModuleNotFoundError(f"{name} is not among the bundled wheels in {site}")
        return spec

sys.meta_path.insert(0, OnlyBundled())
result = bpy.ops.extensions.package_install_files(
    filepath=sys.argv[1], repo="user_default", enable_on_install=True)
module = "bl_ext.user_default.sta_v2a_foley"
enabled = module in bpy.context.preferences.addons
import zmq, msgpack, soxr, numpy
import foley_protocol.client
files = {m.__name__: m.__file__ for m in (zmq, msgpack, soxr, foley_protocol.client)}
roundtrip = msgpack.unpackb(msgpack.packb({"a": [1, 2]}), raw=False)
tone = numpy.sin(numpy.arange(16000, dtype=numpy.float32))
resampled = soxr.resample(tone, 16000, 48000)
operator = hasattr(bpy.ops.sequencer, "foley_generate") and bool(
    bpy.ops.sequencer.foley_generate.get_rna_type())
prefs = bpy.context.preferences.addons[module].preferences
report = {"result": sorted(result), "enabled": enabled, "files": files, "site": site,
          "roundtrip": roundtrip, "resampled": len(resampled), "operator": operator,
          "zmq": zmq.zmq_version(), "server_address": prefs.server_address,
          "output_dir": prefs.output_dir}
bpy.ops.preferences.addon_disable(module=module)  # 4.5 hangs at exit with operators registered
print("REPORT " + json.dumps(report))
"""


def test_zip_installs_enables_and_imports_its_wheels(extension_zip, tmp_path):
    script = tmp_path / "install.py"
    script.write_text(INSTALL_SCRIPT)
    env = dict(os.environ, BLENDER_USER_RESOURCES=tempfile.mkdtemp(dir=tmp_path))
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, str(script), str(extension_zip)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("REPORT ")]
    report = json.loads(line[len("REPORT "):])
    assert report["result"] == ["FINISHED"] and report["enabled"] and report["operator"]
    for name, path in report["files"].items():
        assert path.startswith(report["site"]), (name, path)
    assert report["roundtrip"] == {"a": [1, 2]} and report["resampled"] == 48000
    assert report["server_address"] == "tcp://127.0.0.1:5555"
    assert report["output_dir"] == "//foley/"
