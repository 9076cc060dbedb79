#!/usr/bin/env python3
"""Build the Blender extension zip: one file that installs on every supported platform.

    python tools/build_extension.py                # -> build/extension/sta_v2a_foley-<ver>.zip
    python tools/build_extension.py --out DIR --blender-ext PATH/TO/blender_ext.py

Steps:
1. copy ``blender_addon/`` to a staging folder;
2. ``pip download --only-binary=:all: --no-deps`` the pinned wheels of pyzmq, msgpack and soxr
   for Linux x86_64, Windows x86_64, macOS arm64 and x86_64, for Python 3.11 (Blender
   4.2-5.0) and 3.13 (Blender 5.1+; abi3 wheels cover it); downloads are cached;
3. build a pure-Python wheel of ``shared/foley_protocol`` (its modules import each other as
   ``foley_protocol.*``, so it is installed as a package, not copied into the add-on);
4. write the ``wheels = [...]`` list into the staged ``blender_manifest.toml``;
5. run Blender's own ``blender_ext.py build`` and ``validate`` (it ships inside the bpy wheel
   and in every Blender at ``scripts/addons_core/bl_pkg/cli/blender_ext.py``), then check
   that every package has a wheel for every platform and Python (blender_ext does not).

Needs only the standard library and pip; no Blender process is started.
"""

from __future__ import annotations

import argparse
import base64
import csv
import glob
import hashlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADDON_DIR = REPO / "blender_addon"
PROTOCOL_DIR = REPO / "shared" / "foley_protocol"

# The pinned wheels (name==version), shared with tests/blender/run.sh and `v2a demo`.
REQUIREMENTS_FILE = ADDON_DIR / "requirements.txt"


def read_requirements(path: Path = REQUIREMENTS_FILE) -> tuple[str, ...]:
    """The ``name==version`` lines of a requirements file (comments and blanks skipped)."""
    pins = tuple(line.split("#")[0].strip() for line in path.read_text().splitlines())
    pins = tuple(pin for pin in pins if pin)
    loose = [pin for pin in pins if "==" not in pin]
    if loose:
        raise SystemExit(f"{path}: every requirement must be pinned (name==version): {loose}")
    return pins


REQUIREMENTS = read_requirements()

# Manifest platform -> pip platform tags (pip also accepts older manylinux/macOS tags).
PLATFORMS = {
    "linux-x64": ("manylinux_2_28_x86_64",),  # Blender 4.2+ needs glibc 2.28
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_11_0_arm64",),
    "macos-x64": ("macosx_11_0_x86_64",),
}
PYTHONS = ("3.11", "3.13")  # Blender 4.2-5.0 embed 3.11; 5.1+ embed 3.13


def find_blender_ext() -> Path | None:
    """``blender_ext.py`` from an importable bpy, or from a bpy venv beside the repository."""
    candidates = []
    spec = importlib.util.find_spec("bpy")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates += glob.glob(os.path.join(location, "*", "scripts", "addons_core",
                                                 "bl_pkg", "cli", "blender_ext.py"))
    candidates += glob.glob(str(REPO / ".venv-bpy*" / "lib" / "python*" / "site-packages" / "bpy"
                                / "*" / "scripts" / "addons_core" / "bl_pkg" / "cli"
                                / "blender_ext.py"))
    return Path(sorted(candidates)[-1]) if candidates else None


def valid_tags_file(blender_ext: Path) -> Path | None:
    """Blender's tag list next to ``blender_ext.py`` (…/scripts/modules/_bpy_internal/…)."""
    scripts = blender_ext.parents[3]
    path = scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    return path if path.is_file() else None


# ---- wheels -------------------------------------------------------------------------------


def wheel_tags(filename: str) -> tuple[str, str, set[str], set[str], set[str]]:
    """(distribution, version, python tags, abi tags, platform tags) of a wheel file name."""
    parts = filename[:-len(".whl")].split("-")
    if len(parts) == 6:  # with a build tag
        parts = parts[:2] + parts[3:]
    name, version, py, abi, plat = parts
    return name.lower().replace("_", "-"), version, set(py.split(".")), set(abi.split(".")), \
        set(plat.split("."))


def wheel_fits(filename: str, platform: str, python: str) -> bool:
    """Whether Blender on ``platform`` (manifest name) with ``python`` ("3.11") can use it."""
    _, _, pys, abis, plats = wheel_tags(filename)
    major_minor = python.replace(".", "")
    py_ok = ("py3" in pys or f"cp{major_minor}" in pys
             or ("abi3" in abis and any(p.startswith("cp3") and int(p[3:]) <= int(major_minor[1:])
                                        for p in pys)))
    if not py_ok:
        return False
    if "any" in plats:
        return True
    arch = {"linux-x64": ("linux", "x86_64"), "windows-x64": ("win", "amd64"),
            "macos-arm64": ("macosx", "arm64"), "macos-x64": ("macosx", "x86_64")}[platform]
    for plat in plats:
        if not plat.startswith(arch[0]) and not (arch[0] == "linux" and "linux" in plat):
            continue
        if plat.endswith(arch[1]) or (arch[0] == "macosx" and plat.endswith("universal2")):
            return True
    return False


def missing_wheels(filenames: list[str], packages: list[str]) -> list[str]:
    """"package on platform for Python X" for every combination without a fitting wheel."""
    missing = []
    for package in packages:
        mine = [f for f in filenames if wheel_tags(f)[0] == package]
        for platform in PLATFORMS:
            for python in PYTHONS:
                if not any(wheel_fits(f, platform, python) for f in mine):
                    missing.append(f"{package} on {platform} for Python {python}")
    return missing


def download_wheels(cache: Path, offline: bool) -> list[Path]:
    """The pinned wheels for every platform and Python, downloaded into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    for python in PYTHONS:
        abi = "cp" + python.replace(".", "")
        for platform, tags in PLATFORMS.items():
            for requirement in REQUIREMENTS:
                name = requirement.split("==")[0].lower()
                have = [f.name for f in cache.glob("*.whl") if wheel_tags(f.name)[0] == name
                        and wheel_tags(f.name)[1] == requirement.split("==")[1]]
                if any(wheel_fits(f, platform, python) for f in have):
                    continue
                if offline:
                    raise SystemExit(f"--offline: no cached wheel for {requirement} on "
                                     f"{platform} / Python {python} in {cache}")
                command = [sys.executable, "-m", "pip", "download", "--quiet",
                           "--disable-pip-version-check", "--only-binary=:all:", "--no-deps",
                           "--implementation", "cp", "--python-version", python,
                           "--abi", abi, "--abi", "abi3", "--abi", "none", "--dest", str(cache)]
                for tag in tags:
                    command += ["--platform", tag]
                print(f"  pip download {requirement} ({platform}, Python {python})")
                subprocess.run(command + [requirement], check=True)
    wanted = {r.split("==")[0].lower(): r.split("==")[1] for r in REQUIREMENTS}
    return sorted(f for f in cache.glob("*.whl") if wanted.get(wheel_tags(f.name)[0])
                  == wheel_tags(f.name)[1])


def protocol_version() -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def build_protocol_wheel(out_dir: Path) -> Path:
    """A py3-none-any wheel of ``shared/foley_protocol`` (standard library only)."""
    version = protocol_version()
    dist = f"foley_protocol-{version}"
    files: dict[str, bytes] = {}
    for path in sorted(PROTOCOL_DIR.glob("*.py")):
        files[f"foley_protocol/{path.name}"] = path.read_bytes()
    files[f"{dist}.dist-info/METADATA"] = (
        "Metadata-Version: 2.1\nName: foley-protocol\nVersion: " + version + "\n"
        "Summary: STA-V2A Foley wire protocol (schema, codec, poll-driven client)\n"
        "Requires-Dist: pyzmq\nRequires-Dist: msgpack\n").encode()
    files[f"{dist}.dist-info/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: sta-v2a-foley tools/build_extension.py\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()
    files[f"{dist}.dist-info/top_level.txt"] = b"foley_protocol\n"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist}.dist-info/RECORD", "", ""])
    files[f"{dist}.dist-info/RECORD"] = record.getvalue().encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


# ---- manifest and build -------------------------------------------------------------------


def write_manifest_wheels(manifest: Path, wheel_names: list[str]) -> None:
    """Insert ``wheels = [...]`` among the top-level keys (before the first table)."""
    text = manifest.read_text()
    if re.search(r"^wheels\s*=", text, re.M):
        raise SystemExit(f"{manifest} already lists wheels; the build writes that list")
    listing = "wheels = [\n" + "".join(f'  "./wheels/{n}",\n' for n in wheel_names) + "]\n\n"
    first_table = re.search(r"^\[", text, re.M)
    at = first_table.start() if first_table else len(text)
    manifest.write_text(text[:at] + listing + text[at:])


def run_blender_ext(blender_ext: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(blender_ext), *args], check=True)


def build(out: Path, blender_ext: Path, cache: Path, offline: bool) -> Path:
    stage = out / "stage" / "sta_v2a_foley"
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(ADDON_DIR, stage, ignore=shutil.ignore_patterns(
        "__pycache__", "*.pyc", REQUIREMENTS_FILE.name))  # the manifest lists the wheels
    wheels_dir = stage / "wheels"
    wheels_dir.mkdir()
    print("wheels:")
    for wheel in download_wheels(cache, offline):
        shutil.copy2(wheel, wheels_dir / wheel.name)
    build_protocol_wheel(wheels_dir)
    names = sorted(p.name for p in wheels_dir.glob("*.whl"))
    gaps = missing_wheels(names, ["pyzmq", "msgpack", "soxr", "foley-protocol"])
    if gaps:
        raise SystemExit("missing wheels: " + "; ".join(gaps))
    write_manifest_wheels(stage / "blender_manifest.toml", names)

    tags = valid_tags_file(blender_ext)
    tag_args = [f"--valid-tags={tags}"] if tags else []
    version = re.search(r'^version\s*=\s*"([^"]+)"', (stage / "blender_manifest.toml").read_text(),
                        re.M).group(1)
    zip_path = out / f"sta_v2a_foley-{version}.zip"
    if zip_path.exists():
        zip_path.unlink()
    out.mkdir(parents=True, exist_ok=True)  # blender_ext needs an existing output folder
    run_blender_ext(blender_ext, "build", "--source-dir", str(stage), "--output-filepath",
                    str(zip_path), *tag_args)
    run_blender_ext(blender_ext, "validate", str(zip_path), *tag_args)
    with zipfile.ZipFile(zip_path) as zf:
        zipped = sorted(Path(n).name for n in zf.namelist() if n.endswith(".whl"))
    if zipped != names:
        raise SystemExit(f"the zip holds {zipped}, expected {names}")
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "extension",
                        help="output folder (default build/extension)")
    parser.add_argument("--blender-ext", type=Path, default=None,
                        help="path to blender_ext.py (default: from an importable bpy, or a "
                        ".venv-bpy* beside the repository)")
    parser.add_argument("--wheel-cache", type=Path, default=None,
                        help="where downloaded wheels are kept (default <out>/wheel-cache)")
    parser.add_argument("--offline", action="store_true",
                        help="use cached wheels only; fail if one is missing")
    args = parser.parse_args(argv)
    blender_ext = args.blender_ext or find_blender_ext()
    if blender_ext is None or not blender_ext.is_file():
        raise SystemExit("blender_ext.py not found: pass --blender-ext (it is in every Blender "
                         "4.2+ at <version>/scripts/addons_core/bl_pkg/cli/blender_ext.py and in "
                         "the bpy wheel)")
    out = args.out.resolve()
    zip_path = build(out, blender_ext, (args.wheel_cache or out / "wheel-cache").resolve(),
                     args.offline)
    size_mb = zip_path.stat().st_size / 1e6
    print(f"built {zip_path} ({size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
