#!/usr/bin/env bash
# Run the Blender add-on tests inside real bpy (headless) for one Blender version.
#
#   tests/blender/run.sh 4.5 [pytest args]     # Blender 4.5 LTS (Python 3.11)
#   tests/blender/run.sh 5.0 [pytest args]     # Blender 5.0     (Python 3.11)
#   tests/blender/run.sh 5.2 [pytest args]     # Blender 5.2 LTS (Python 3.13)
#
# Creates .venv-bpy<XY> (bpy ~850 MB) on first use, with a Python of the version that Blender
# embeds ($BPY_PYTHON overrides the interpreter used to create it). The tests start v2a-server
# with the main venv's Python ($V2A_SERVER_PYTHON, default .venv/bin/python: it must already
# have the project installed). The extension zip is built into build/extension (wheels from
# PyPI, cached there) unless $FOLEY_EXTENSION_ZIP names a built one.
set -euo pipefail
cd "$(dirname "$0")/../.."

version="${1:?usage: tests/blender/run.sh 4.5|5.0|5.2 [pytest args]}"
shift
case "$version" in
  4.5|5.0) python_version=3.11 ;;
  5.1|5.2) python_version=3.13 ;;
  *) echo "unsupported Blender version $version (4.5, 5.0, 5.2)" >&2; exit 2 ;;
esac
venv=".venv-bpy${version/./}"
if [ ! -x "$venv/bin/python" ]; then
  interpreter="${BPY_PYTHON:-$(command -v "python$python_version" || true)}"
  if [ -z "$interpreter" ] && python3 -c "import sys; sys.exit(sys.version_info[:2] != \
      tuple(map(int, '$python_version'.split('.'))))" 2>/dev/null; then
    interpreter="$(command -v python3)"
  fi
  if [ -z "$interpreter" ]; then
    echo "Blender $version needs Python $python_version: install it or set BPY_PYTHON" >&2
    exit 2
  fi
  "$interpreter" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  "bpy==${version}.*" -r blender_addon/requirements.txt "numpy" \
  "pytest>=8" "av>=14" "soundfile>=0.13"

export V2A_SERVER_PYTHON="${V2A_SERVER_PYTHON:-$PWD/.venv/bin/python}"
if [ ! -x "$V2A_SERVER_PYTHON" ]; then
  echo "no server Python at $V2A_SERVER_PYTHON: install the project first (see README)" >&2
  exit 2
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export BLENDER_USER_RESOURCES="$scratch/blender-user"
# --confcutdir: conftests above tests/blender are the torch suite's, not needed in bpy venvs;
# -p no:cacheprovider: several Blender versions may run side by side.
exec "$venv/bin/python" -m pytest tests/blender -q -p no:cacheprovider \
  --confcutdir=tests/blender --basetemp="$scratch/pytest" "$@"
