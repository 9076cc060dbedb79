"""The contact detector's fit (``v2a_server.training.contact_detector``) on real synthetic
clips: labels where the physics puts the contacts, textures that move with their bodies, a
saved detector that loads and scores, and the shipped detector's features in step with the
code."""

from __future__ import annotations

import numpy as np
import pytest

from v2a_server.evaluation import contacts
from v2a_server.evaluation.contacts import FEATURES, GRID, ContactDetector
from v2a_server.synth.clip import make_clip
from v2a_server.synth.render import render_frames
from v2a_server.training.contact_detector import clip_examples, fit_detector, textured_bodies

SEED = 15  # a clip of the validation split: collisions and drops


def test_labels_mark_the_touching_bodies_cells_at_each_contact_frame():
    features, labels = clip_examples(SEED)
    clip = make_clip(SEED, fps=25.0)
    assert features.shape == (len(clip.frames), GRID, GRID, len(FEATURES))
    contact_frames = sorted({int(round(e.time_s * 25.0)) for e in clip.events})
    assert sorted(np.nonzero((labels == 1).any(axis=(1, 2)))[0].tolist()) == contact_frames
    for k in contact_frames:  # the frames either side are ignored in those cells, not negative
        cells = labels[k] == 1
        assert np.all(labels[k - 1][cells] != 0) and np.all(labels[k + 1][cells] != 0)
    assert (labels == 0).sum() > 50 * (labels == 1).sum()


def test_a_texture_moves_with_its_body_and_leaves_the_rest_alone():
    clip = make_clip(SEED, fps=25.0)
    _frames, owners = render_frames(clip.scene, 25.0, clip.frames.shape[1], return_labels=True)
    textured = textured_bodies(clip.frames[:60], owners[:60], np.random.default_rng(0))
    outside = owners[:60] < 0
    assert np.array_equal(textured[outside], clip.frames[:60][outside])
    changed = np.any(textured != clip.frames[:60], axis=-1)
    assert changed[~outside].mean() > 0.8
    # a resting body keeps its texture from frame to frame (anchored to the body, not the image)
    still = [b for b in np.unique(owners[0][owners[0] >= 0])
             if all(np.array_equal(owners[k] == b, owners[0] == b) for k in range(1, 5))]
    assert still
    pixels = owners[0] == still[0]
    assert np.array_equal(textured[0][pixels], textured[4][pixels])


def test_a_fitted_detector_saves_loads_and_scores(tmp_path):
    examples = [clip_examples(SEED)]
    detector = fit_detector(examples, epochs=2, info="test")
    path = tmp_path / "detector.npz"
    detector.save(path)
    loaded = ContactDetector.load(path)
    features = examples[0][0]
    assert np.allclose(loaded.probabilities(features), detector.probabilities(features))
    probability = loaded.probabilities(features)
    assert probability.shape == features.shape[:3]
    assert probability[0].max() == probability[-1].max() == 0.0
    assert 0.0 <= probability.min() and probability.max() <= 1.0
    assert loaded.info == "test"


def test_the_shipped_detector_was_fitted_on_these_features():
    detector = contacts.default_detector()
    assert detector.mean.shape == ((2 * contacts.CONTEXT_FRAMES + 1) * len(FEATURES),)
    assert "train split" in detector.info


def test_a_detector_of_other_features_is_refused_by_name(tmp_path):
    detector = contacts.default_detector()
    path = tmp_path / "old.npz"
    detector.save(path)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["features"] = np.array(FEATURES[:-1])
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="fitted on other features; refit it"):
        ContactDetector.load(path)
