"""`v2a demo`: the whole product headless, end to end, in one command.

Starts ``v2a-server`` on a model (the embedded default one unless ``--model DIR``), makes a demo
clip with the synthetic Foley world (or takes ``--clip VIDEO``), opens a new Blender project in
the ``bpy`` module, loads the add-on from ``blender_addon/`` and runs Generate Foley through the
add-on's own code (operator + its job loop), then writes into ``--out``:

    demo.blend           the project: movie strip, the Foley sound strip, onset markers
    foley/*.wav          the generated take at the scene's mix rate
    demo_preview.mp4     the edit rendered by Blender (H.264 + AAC mixdown)
    demo_sync.png        motion, audio and onsets on one time axis
    demo_result.json     placement, take, onsets, timings, and the sync review: each onset
                         marker's verdict ("review": time_s from the take's first frame,
                         state in_sync / late / early / no_visual_cause, offset_ms to its
                         contact event) and the "silent_hits" (seconds), as the add-on's
                         review list shows them

Blender runs as a Python module in its own venv (torch never meets bpy): ``--blender-python``,
or ``$V2A_BLENDER_PYTHON``, or ``.venv-bpy45`` / ``.venv-bpy50`` beside this checkout; when none
exists the command creates ``.venv-bpy45`` (``pip install bpy==4.5.*``, ~850 MB) unless
``--no-install``.

This file is also the Blender-side driver: the bpy Python runs it as a script
(``python demo.py --blender-side SPEC.json``); that half imports only the standard library,
bpy, and the add-on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

NAME = "demo"
HELP = "run Generate Foley end to end in headless Blender (server + bpy + add-on) and save the results"

REPO = Path(__file__).resolve().parents[2]
ADDON_DIR = REPO / "blender_addon"
SHARED_DIR = REPO / "shared"
ADDON_ID = "sta_v2a_foley"
ADDON_MODULE = f"bl_ext.user_default.{ADDON_ID}"
BPY_REQUIREMENTS = ("bpy==4.5.*", "-r", str(ADDON_DIR / "requirements.txt"))  # add-on's pins
DEMO_SEED = 3  # a synthetic clip with a few clear impacts
DEMO_DURATION_S = 8.0
SERVER_READY_TIMEOUT_S = 600.0


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="default",
                        help="pipeline folder, or 'default' (the embedded model)")
    parser.add_argument("--out", default="demo", help="output folder (default ./demo)")
    parser.add_argument("--clip", help="a real video to use instead of a synthetic clip")
    parser.add_argument("--caption", help="what should be heard (default: the synthetic clip's "
                        "own caption, or 'footsteps and impacts' for --clip)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--duration", type=float, default=DEMO_DURATION_S,
                        help=f"seconds of the clip to use (default {DEMO_DURATION_S:g})")
    parser.add_argument("--blender-python", help="a Python that can import bpy")
    parser.add_argument("--no-install", action="store_true",
                        help="never create a bpy venv; fail if none is found")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds to wait for the generation (default 1800)")


# ---- main venv side --------------------------------------------------------------------


def run(args) -> int:
    import shutil
    import socket
    import subprocess

    from v2a_server.model_store import resolve_model_dir

    if not (ADDON_DIR / "blender_manifest.toml").is_file():
        raise SystemExit(f"v2a demo: the add-on is not at {ADDON_DIR}; run from a source checkout")
    try:
        model_dir = resolve_model_dir(args.model)
    except FileNotFoundError as exc:
        raise SystemExit(f"v2a demo: {exc}\n  For a smoke test with random weights: "
                         "v2a create-model --config tiny --out /tmp/tiny && "
                         "v2a demo --model /tmp/tiny") from None
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if any((out / name).exists() for name in ("demo.blend", "foley")):
        raise SystemExit(f"v2a demo: {out} already holds a demo; choose another --out")
    blender_python = find_blender_python(args)

    t0 = time.perf_counter()
    clip = prepare_clip(args, out)
    print(f"clip: {clip['path']} ({clip['duration_s']:.2f} s) - caption {clip['caption']!r}")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    log_path = out / "server.log"
    with open(log_path, "wb") as log:
        # "default" goes through as is, so the server reports the model as "default".
        served = "default" if args.model == "default" else str(model_dir)
        server = subprocess.Popen([sys.executable, "-m", "v2a_server.commands.serve", "--model",
                                   served, "--bind", endpoint], stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        wait_for_server(server, log_path)
        print(f"server: {endpoint} (model {model_dir}, log {log_path})")
        spec = {"out": str(out), "clip": clip, "endpoint": endpoint, "seed": args.seed,
                "steps": args.steps, "timeout_s": args.timeout}
        spec_path = out / "demo_spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        user_dir = out / ".blender-user"
        env = dict(os.environ, BLENDER_USER_RESOURCES=str(user_dir))
        blender_log = out / "blender.log"
        print(f"blender: {blender_python} (bpy, headless; log {blender_log})")
        with open(blender_log, "wb") as log:
            done = subprocess.run([str(blender_python), __file__, "--blender-side",
                                   str(spec_path)], env=env, stdout=log, stderr=subprocess.STDOUT)
        shutil.rmtree(user_dir, ignore_errors=True)
        summary = [line for line in blender_log.read_text(errors="replace").splitlines()
                   if line.startswith(("Generate Foley:", "v2a demo:"))]
        print("\n".join(summary))
        if done.returncode != 0:
            tail = blender_log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"v2a demo: the Blender side failed (exit {done.returncode}):\n"
                             f"{tail}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    result = json.loads((out / "demo_result.json").read_text())
    draw_sync_picture(result, out / "demo_sync.png")
    print(f"done in {time.perf_counter() - t0:.0f} s:")
    for key in ("blend", "wav", "preview"):
        print(f"  {result['files'][key]}")
    print(f"  {out / 'demo_sync.png'}")
    return 0


def find_blender_python(args) -> Path:
    """A Python that imports bpy; creates ``.venv-bpy45`` if none is found (unless told not)."""
    import subprocess

    candidates = [args.blender_python, os.environ.get("V2A_BLENDER_PYTHON")]
    candidates += [str(REPO / name / "bin" / "python") for name in (".venv-bpy45", ".venv-bpy50")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            check = subprocess.run([candidate, "-c", "import bpy, zmq, msgpack, soxr"],
                                   capture_output=True, timeout=300)
            if check.returncode == 0:
                return Path(candidate)
            if candidate == args.blender_python:
                raise SystemExit(f"v2a demo: {candidate} cannot import bpy, zmq, msgpack and "
                                 f"soxr:\n{check.stderr.decode(errors='replace')[-2000:]}")
    if args.no_install:
        raise SystemExit("v2a demo: no Python with bpy found; pass --blender-python or drop "
                         "--no-install")
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("v2a demo: bpy 4.5 needs Python 3.11 and this is "
                         f"{sys.version.split()[0]}; pass --blender-python")
    venv = REPO / ".venv-bpy45"
    print(f"installing Blender as a Python module (bpy 4.5 LTS, ~850 MB) into {venv} ...")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *BPY_REQUIREMENTS],
                   check=True)
    return python


def prepare_clip(args, out: Path) -> dict:
    """The demo video: ``--clip`` as given, or a synthetic clip written to ``out``."""
    if args.clip:
        path = Path(args.clip).resolve()
        if not path.is_file():
            raise SystemExit(f"v2a demo: no such clip {path}")
        return {"path": str(path), "caption": args.caption or "footsteps and impacts",
                "duration_s": args.duration, "events_s": None, "synthetic": False}
    from v2a_server.synth import make_clip, write_mp4

    clip = make_clip(DEMO_SEED, duration_s=args.duration, fps=25.0, size_px=256)
    path = out / "demo_clip.mp4"
    write_mp4(path, clip.frames, clip.fps)
    return {"path": str(path), "caption": args.caption or clip.caption,
            "duration_s": clip.duration_s, "events_s": clip.event_times_s.tolist(),
            "synthetic": True}


def wait_for_server(server, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while "v2a_server: ready:" not in log_path.read_text(errors="replace"):
        if server.poll() is not None:
            raise SystemExit(f"v2a demo: the server exited ({server.returncode}); see {log_path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"v2a demo: the server did not load its model in "
                             f"{SERVER_READY_TIMEOUT_S:.0f} s; see {log_path}")
        time.sleep(0.2)


def draw_sync_picture(result: dict, path: Path) -> None:
    """The take's sync picture (``v2a_server.evaluation.sync_picture``, the one the server
    draws too)."""
    import numpy as np
    import soundfile

    from v2a_server.evaluation.metrics import audio_onsets_waveform, video_motion_events
    from v2a_server.evaluation.sync_picture import SyncPictureData
    from v2a_server.evaluation.sync_picture import draw_sync_picture as draw

    take = result["take"]
    audio, rate = soundfile.read(result["files"]["wav"], dtype="float32", always_2d=False)
    offset_s, duration_s = result["source_offset_s"], take["duration_s"]
    motion = video_motion_events(result["clip"]["path"])
    first = int(round(offset_s * motion.fps))
    count = int(round(duration_s * motion.fps))
    events = [t - offset_s for t in motion.times_s if 0.0 <= t - offset_s < duration_s]
    onsets = audio_onsets_waveform(audio, rate)
    # the markers' exact seconds, as the review judged them (their frames are rounded)
    markers = [r["time_s"] for r in result["review"]]
    truth = [t - offset_s for t in (result["clip"].get("events_s") or [])]
    draw(SyncPictureData(
        audio=audio, sample_rate=rate, motion_energy=np.asarray(motion.energy[first:first + count]),
        motion_fps=motion.fps, motion_events_s=events, marker_times_s=markers,
        frame_rate=result["scene_fps"], onset_envelope=onsets.envelope,
        onset_envelope_rate_hz=onsets.envelope_rate_hz, reference_events_s=truth,
        contacts_s=result["contacts"]["times_s"] if result["contacts"] else None,
        contact_strengths=result["contacts"]["strengths"] if result["contacts"] else [],
        title=f"{result['strip']}: \u201c{take['caption']}\u201d \u2014 model "
              f"{take['model_id']}, seed {take['seed']}"), path)


def review_summary(marker_times_s, contacts_s, contact_strengths, frame_rate: float) -> dict:
    """The sync review of a take as ``demo_result.json`` holds it (``foley_protocol.review``,
    the add-on's review list's own rule).

    Returns:
        ``{"review": [{"time_s", "state", "offset_ms"}] (one per marker, in time order;
        offset_ms None without a contact), "silent_hits": [seconds]}``.
    """
    from foley_protocol.review import review_sync

    markers = sorted(float(t) for t in marker_times_s)
    found = review_sync(markers, contacts_s, contact_strengths, frame_rate)
    return {
        "review": [{"time_s": t, "state": v.state,
                    "offset_ms": None if v.offset_s is None else v.offset_s * 1000.0}
                   for t, v in zip(markers, found.verdicts)],
        "silent_hits": [float(contacts_s[i]) for i in found.silent_hits],
    }


# ---- Blender side (run by the bpy Python; standard library + bpy + the add-on only) ------


def enable_addon_from_source(addon_dir: Path = ADDON_DIR, shared_dir: Path = SHARED_DIR):
    """Link ``blender_addon/`` into the user_default extensions repo and enable it.

    Set ``BLENDER_USER_RESOURCES`` to a scratch folder before importing bpy.
    Returns the add-on module name (``bl_ext.user_default.sta_v2a_foley``).
    """
    import addon_utils
    import bpy

    if str(shared_dir) not in sys.path:  # foley_protocol; the built zip bundles it as a wheel
        sys.path.insert(0, str(shared_dir))
    repo_dir = Path(bpy.utils.user_resource("EXTENSIONS", path="user_default", create=True))
    link = repo_dir / ADDON_ID
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(addon_dir, target_is_directory=True)
    if addon_utils.enable(ADDON_MODULE, default_set=True, handle_error=None) is None:
        raise RuntimeError(f"could not enable {ADDON_MODULE}")
    return ADDON_MODULE


def disable_addon() -> None:
    import addon_utils
    import bpy

    if ADDON_MODULE in bpy.context.preferences.addons:
        addon_utils.disable(ADDON_MODULE, default_set=True, handle_error=None)


def scene_rate_for(fps: float) -> tuple[int, float]:
    """(render.fps, render.fps_base) for a movie's rate (29.97 -> 30, 1.001)."""
    nearest = max(1, round(fps))
    if abs(fps - nearest) < 1e-3:
        return nearest, 1.0
    return nearest, nearest / fps


def blender_side(spec_path: str) -> int:
    import importlib

    import bpy

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    clip = spec["clip"]
    enable_addon_from_source()
    try:
        jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
        compat = importlib.import_module(f"{ADDON_MODULE}.compat")
        review = importlib.import_module(f"{ADDON_MODULE}.review")
        bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
        bpy.context.preferences.filepaths.save_version = 0  # no demo.blend1 backups
        prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
        prefs.server_address = spec["endpoint"]
        prefs.connect_timeout_s = 60.0
        prefs.job_timeout_s = float(spec["timeout_s"])
        if spec["steps"]:
            prefs.steps = int(spec["steps"])

        scene = bpy.context.scene
        scene.name = "Foley demo"
        se = scene.sequence_editor_create()
        strips = compat.strips(se)
        # ORIGINAL: one clip pixel per render pixel. FIT would scale the clip for the factory
        # 1920x1080 canvas, and the editor (and the model) would see a 4x zoomed crop of it.
        movie = strips.new_movie(name="Demo clip", filepath=clip["path"], channel=1,
                                 frame_start=1, fit_method="ORIGINAL")
        scene.render.fps, scene.render.fps_base = scene_rate_for(movie.fps)
        element = movie.elements[0]
        scene.render.resolution_x = element.orig_width or 256
        scene.render.resolution_y = element.orig_height or 256
        scene.render.resolution_percentage = 100
        scene.view_settings.view_transform = "Standard"
        first, end = compat.strip_range(movie)
        rate = scene.render.fps / scene.render.fps_base
        wanted_end = first + int(round(clip["duration_s"] * rate))
        if wanted_end < end:
            compat.set_strip_end(movie, wanted_end)
            first, end = compat.strip_range(movie)
        scene.frame_start, scene.frame_end = first, end - 1
        movie.foley.caption = clip["caption"]
        for strip in strips:
            strip.select = strip == movie
        se.active_strip = movie
        blend = out / "demo.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))  # //foley/ needs a saved file

        t0 = time.perf_counter()
        args = {"seed": spec["seed"]} if spec["seed"] is not None else {}
        bpy.ops.sequencer.foley_generate(**args)
        jobs.wait_until_idle(timeout_s=float(spec["timeout_s"]) + 120)
        job = jobs.manager().jobs[-1]
        if job.state != "done":
            print(f"v2a demo: Generate Foley ended {job.state}: {job.message}")
            return 1
        generate_s = time.perf_counter() - t0
        print(f"Generate Foley: {job.message} ({generate_s:.1f} s)", flush=True)
        bpy.ops.wm.save_mainfile()

        sound = next(s for s in compat.all_strips(se) if s.foley.is_foley)
        take = sound.foley.takes[sound.foley.active_take]
        marker_frames = sorted(m.frame for m in scene.timeline_markers
                               if m.name.startswith(take.marker_tag))
        if not take.has_contacts:
            print("v2a demo: the server sent no contact events: no sync review", flush=True)
        verdicts = review_summary([r.time_s for r in review.review_rows(scene, take)],
                                  [c.time_s for c in take.contacts],
                                  [c.strength for c in take.contacts], rate)
        wav = Path(bpy.path.abspath(sound.sound.filepath))
        preview = out / "demo_preview.mp4"
        render_preview(scene, preview)
        result = {
            "strip": movie.name,
            "scene_fps": rate,
            "movie_range": [first, end],
            "source_offset_s": (first - compat.content_start(movie)) / rate,
            "sound": {"name": sound.name, "channel": sound.channel,
                      "range": list(compat.strip_range(sound)),
                      "samplerate": sound.sound.samplerate},
            "take": {"take_id": take.take_id, "number": take.number, "seed": take.seed,
                     "caption": take.caption, "model_id": take.model_id,
                     "frame_start": take.frame_start, "frame_end": take.frame_end,
                     "duration_s": take.duration_s, "sample_rate": take.sample_rate,
                     "marker_tag": take.marker_tag,
                     "onsets": [{"time_s": o.time_s, "probability": o.probability}
                                for o in take.onsets]},
            "marker_frames": marker_frames,
            **verdicts,
            "contacts": {"times_s": [c.time_s for c in take.contacts],
                         "strengths": [c.strength for c in take.contacts]}
            if take.has_contacts else None,
            "clip": clip,
            "files": {"blend": str(blend), "wav": str(wav), "preview": str(preview)},
            "timings_s": {"generate_foley": generate_s, **job.timings_s,
                          **{f"server_{k}": v for k, v in job.server_timings_s.items()}},
        }
        (out / "demo_result.json").write_text(json.dumps(result, indent=1))
        return 0
    finally:
        jobs_module = sys.modules.get(f"{ADDON_MODULE}.jobs")
        if jobs_module is not None:
            jobs_module.manager().cancel(reason="demo finished")
        disable_addon()  # Blender 4.5 hangs at exit while operators are registered


def render_preview(scene, path: Path) -> None:
    """Render the edit with its mixdown: H.264 + AAC, about 480 pixels wide."""
    import bpy

    compat = sys.modules[f"{ADDON_MODULE}.compat"]
    render = scene.render
    render.resolution_percentage = max(1, min(100, round(48000 / render.resolution_x)))
    compat.set_video_format(render.image_settings)
    render.ffmpeg.format = "MPEG4"
    render.ffmpeg.codec = "H264"
    render.ffmpeg.audio_codec = "AAC"
    render.ffmpeg.audio_bitrate = 192
    render.ffmpeg.audio_channels = "STEREO"
    render.filepath = str(path)
    render.use_file_extension = False
    bpy.ops.render.render(animation=True, scene=scene.name)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--blender-side":
    sys.exit(blender_side(sys.argv[2]))
