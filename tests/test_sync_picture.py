"""The sync picture (server side, matplotlib) and the audio onsets it and the result carry."""

from __future__ import annotations

import io

import numpy as np
import pytest

from v2a_server.evaluation.metrics import audio_onsets_waveform, detect_onsets_waveform
from v2a_server.evaluation.sync_picture import (
    HEIGHT_PX,
    WIDTH_PX,
    SyncPictureData,
    draw_sync_picture,
)


def clicks(times_s, sample_rate=16000, duration_s=3.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    audio = np.zeros(int(duration_s * sample_rate), np.float32)
    for t in times_s:
        start = int(t * sample_rate)
        audio[start:start + 400] += rng.standard_normal(400).astype(np.float32) * 0.5
    return audio


def test_audio_onsets_are_the_metric_onsets_with_strengths():
    audio = clicks([0.5, 1.25, 2.0])
    found = audio_onsets_waveform(audio, 16000)
    assert np.array_equal(found.times_s, detect_onsets_waveform(audio, 16000))
    assert found.times_s == pytest.approx([0.5, 1.25, 2.0], abs=0.03)
    assert len(found.strengths) == 3 and ((found.strengths > 0.3) & (found.strengths <= 1)).all()
    assert found.envelope_rate_hz == pytest.approx(22050 / 512)
    assert len(found.envelope) == pytest.approx(3.0 * found.envelope_rate_hz, abs=2)
    silent = audio_onsets_waveform(np.zeros(16000, np.float32), 16000)
    assert len(silent.times_s) == 0 and len(silent.strengths) == 0


@pytest.mark.parametrize("size", [(WIDTH_PX, HEIGHT_PX), (640, 360)])
def test_picture_is_a_png_of_the_asked_size(tmp_path, size):
    from PIL import Image

    audio = clicks([0.5, 1.25, 2.0])
    energy = np.zeros(75)
    energy[[12, 31, 50]] = 3.0
    data = SyncPictureData(audio=audio, sample_rate=16000, motion_energy=energy, motion_fps=25.0,
                           motion_events_s=[0.48, 1.24, 2.0], marker_times_s=[0.5, 1.3, 2.3],
                           frame_rate=25.0, title="test")
    path = tmp_path / "sync.png"
    png = draw_sync_picture(data, path, *size)
    assert path.read_bytes() == png
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", size)


def test_waveform_envelope_keeps_every_peak():
    from v2a_server.evaluation.sync_picture import waveform_envelope

    audio = np.zeros(16000, np.float32)
    audio[[100, 5000, 15999]] = [0.9, -0.7, 0.5]
    times, low, high = waveform_envelope(audio, 16000.0, 1280)
    assert len(times) == len(low) == len(high) == 1280
    assert high.max() == np.float32(0.9) and low.min() == np.float32(-0.7) and high[-1] == np.float32(0.5)
    assert np.all(np.diff(times) > 0) and 0 < times[0] < times[-1] < 1.0
    short = waveform_envelope(np.array([0.1, -0.2], np.float32), 16000.0, 1280)
    assert [len(x) for x in short] == [2, 2, 2]


def test_markers_are_coloured_by_their_verdict_against_the_contacts(tmp_path):
    from v2a_server.evaluation.sync_picture import marker_looks

    audio = clicks([0.5, 1.25, 2.0])
    data = SyncPictureData(audio=audio, sample_rate=16000, motion_energy=np.ones(75),
                           motion_fps=25.0, motion_events_s=[0.4, 1.2],
                           marker_times_s=[0.5, 1.41, 2.6], frame_rate=25.0,
                           contacts_s=[0.5, 1.25, 2.0], contact_strengths=[1.0, 0.9, 0.8])
    looks, silent = marker_looks(data)
    # in sync; 4 frames late (+160 ms); nothing within 5 frames; the hit at 2.0 s has no sound
    assert looks == [("tab:green", None), ("tab:red", "+160 ms"), ("tab:purple", "no cause")]
    assert silent == [2.0]
    png = draw_sync_picture(data, tmp_path / "sync.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # without contact events (data from before them): the nearest motion event, as before
    data.contacts_s = None
    looks, silent = marker_looks(data)
    assert looks == [("tab:red", "+100 ms"), ("tab:red", "+210 ms"), ("tab:red", "+1400 ms")]
    assert silent == []
