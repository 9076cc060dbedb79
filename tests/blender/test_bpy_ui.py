"""Registration, menu entry, preferences defaults, data model and panel texts."""

from __future__ import annotations

import pytest

pytest.importorskip("bpy")

import bpy  # noqa: E402

from tests.blender.bpy_helpers import addon_module  # noqa: E402
from tests.blender.conftest import ADDON_MODULE  # noqa: E402


def test_preferences_defaults(addon, bpy_module):
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    rna = prefs.bl_rna.properties
    assert rna["server_address"].default == "tcp://127.0.0.1:5555"
    assert rna["server_public_key"].default == ""
    assert rna["output_dir"].default == "//foley/"
    negative = rna["negative_caption"].default
    assert "speech" in negative and "music" in negative
    assert rna["sampler"].default == "dpmpp" and rna["variations"].default == 1
    assert rna["guidance"].default == 0.0 and rna["marker_prefix"].default == "Foley "  # 0: model default


def test_operators_panels_and_strip_menu(addon):
    for name in ("foley_generate", "foley_cancel", "foley_connect", "foley_report"):
        assert hasattr(bpy.ops.sequencer, name)
    assert bpy.ops.sequencer.foley_generate.get_rna_type().name == "Generate Foley"
    panels = [getattr(bpy.types, n) for n in ("SEQUENCER_PT_foley", "SEQUENCER_PT_foley_jobs",
                                              "SEQUENCER_PT_foley_server",
                                              "SEQUENCER_PT_foley_takes")]
    assert all(p.bl_category == "Foley" and p.bl_space_type == "SEQUENCE_EDITOR"
               for p in panels)
    operators = addon_module("operators")
    assert operators.draw_strip_menu in bpy.types.SEQUENCER_MT_strip._dyn_ui_initialize()


def test_data_model_on_strips_and_scenes(addon):
    compat, properties = addon_module("compat"), addon_module("properties")
    take_props = properties.FoleyTake.bl_rna.properties.keys()
    for key in ("take_id", "number", "filepath", "seed", "caption", "frame_start", "frame_end",
                "created", "onsets", "marker_tag", "model_id", "sampler", "steps", "guidance"):
        assert key in take_props, key
    assert "foley" in compat.STRIP_TYPE.bl_rna.properties.keys()
    assert "foley" in bpy.types.Scene.bl_rna.properties.keys()


def test_job_status_texts(addon):
    jobs, placement = addon_module("jobs"), addon_module("placement")
    snapshot = placement.Snapshot("Scene", "Clip", 1, 1, 101, 1.0, 25.0, "/tmp", True, "F ")
    job = jobs.Job(1, snapshot, {}, 224, 0.0, 60.0, state="running",
                   progress={"stage": "denoise", "step": 5, "total_steps": 20, "eta_s": 65})
    assert job.status() == (0.25, "denoise 5/20 · ETA 1 min 05 s")
    job.progress = {"stage": "queued", "queue_position": 2}
    assert job.status() == (0.0, "queued, position 2")
    assert snapshot.duration_s == 4.0


def test_review_panel_and_operators_are_registered(addon):
    for name in ("foley_onset_next", "foley_onset_previous", "foley_onset_audition",
                 "foley_marker_accept", "foley_marker_reject", "foley_marker_nudge",
                 "foley_marker_add", "foley_sync_picture_show", "foley_regenerate_markers"):
        assert hasattr(bpy.ops.sequencer, name), name
    assert bpy.ops.sequencer.foley_onset_next.get_rna_type().name == "Next Foley Onset"
    assert bpy.ops.sequencer.foley_regenerate_markers.get_rna_type().name == \
        "Regenerate with Markers"
    panel = bpy.types.SEQUENCER_PT_foley_review
    assert panel.bl_parent_id == "SEQUENCER_PT_foley" and panel.bl_category == "Foley"
    take_props = addon_module("properties").FoleyTake.bl_rna.properties.keys()
    for key in ("motion_events", "audio_onsets", "review_markers", "active_review_marker",
                "sync_picture", "hinted"):
        assert key in take_props, key
