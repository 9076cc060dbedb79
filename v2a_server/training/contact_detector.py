"""Fit the visual contact detector (``evaluation.contacts.ContactDetector``) on the synthetic
world, where the physics gives every contact's time and the renderer the touching bodies.

1. Clips of the *train* split (``synth.dataset.clip_seeds``; validation and test are never
   seen), rendered with their per-pixel body labels. The world draws flat colours; real
   bodies have texture, which changes what frame differences and flow see: half the clips get
   a random texture on every body, moving with it (``TEXTURED_SHARE``).
2. Each clip's ``contacts.frame_features``; labels per (frame, cell): 1 at the frame nearest a
   contact in every cell the touching bodies cover then, ignored in those cells one frame
   either side (the true time falls between frames), 0 elsewhere.
3. A multilayer perceptron (two hidden ReLU layers) on ``contacts.detector_inputs``, trained
   with a class-weighted logistic loss on every positive and a share of the negatives.
4. Saved as an ``.npz`` that ``ContactDetector.load`` reads (numpy only at inference).

  python -m v2a_server.training.contact_detector [--clips 400] [--jobs 2] [--threads 1]
      [--out v2a_server/evaluation/contact_detector.npz]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from v2a_server.evaluation.contacts import (
    DETECTOR_FILE,
    GRID,
    CellGrid,
    ContactDetector,
    detector_inputs,
    frame_features,
)

FPS = 25.0
HIDDEN = 32
EPOCHS = 40
NEGATIVE_SHARE = 0.25
"""Share of the negative (frame, cell)s kept for training: there are ~100 per positive."""
TEXTURED_SHARE = 0.5
"""Share of the training clips whose bodies get a texture (``textured_bodies``)."""
TEXTURE_GREY_LEVELS = 40
BATCH = 4096
LEARNING_RATE = 3e-3


def textured_bodies(frames: np.ndarray, owners: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """``frames`` with each body's pixels brightened or darkened by a random texture of its own
    (smooth noise of +-``TEXTURE_GREY_LEVELS``), anchored at the body's bottom-left in every
    frame, so that the texture moves with the body."""
    import cv2

    out = frames.astype(np.int16)
    height, width = owners.shape[1:]
    for body in np.unique(owners[owners >= 0]):
        noise = rng.uniform(-1.0, 1.0, (height, width)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), 1.0)
        texture = np.round(noise / max(float(np.abs(noise).max()), 1e-6)
                           * TEXTURE_GREY_LEVELS).astype(np.int16)
        for k in range(len(frames)):
            ys, xs = np.nonzero(owners[k] == body)
            if len(ys):
                out[k, ys, xs] += texture[ys.max() - ys, xs - xs.min()][:, None]
    return np.clip(out, 0, 255).astype(np.uint8)


def clip_examples(seed: int, fps: float = FPS) -> tuple[np.ndarray, np.ndarray]:
    """One clip's (features [T, GRID, GRID, F], labels [T, GRID, GRID] int8: 1, 0, -1 ignore)."""
    from v2a_server.synth.clip import make_clip
    from v2a_server.synth.render import render_frames

    clip = make_clip(seed, fps=fps)
    _frames, owners = render_frames(clip.scene, fps, clip.frames.shape[1], return_labels=True)
    rng = np.random.default_rng([seed, 7919])
    frames = clip.frames
    if rng.random() < TEXTURED_SHARE:
        frames = textured_bodies(frames, owners, rng)
    features = frame_features(frames)
    count = len(features)
    labels = np.zeros((count, GRID, GRID), np.int8)
    grid = CellGrid(owners.shape[1:], None)
    for event in clip.events:
        k = int(round(event.time_s * fps))
        if not 0 < k < count - 1:
            continue
        bodies = [event.body.body_id] + ([event.other.body_id] if event.other else [])
        cells = grid.mean(np.isin(owners[k], bodies).astype(np.float64)) > 0
        for near in (k - 1, k + 1):
            labels[near][cells & (labels[near] == 0)] = -1
        labels[k][cells] = 1
    return features, labels


def _examples_of(seed: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    cv2.setNumThreads(1)
    return clip_examples(seed)


def fit_detector(examples: list[tuple[np.ndarray, np.ndarray]], *, hidden: int = HIDDEN,
                 epochs: int = EPOCHS, seed: int = 0, info: str = "") -> ContactDetector:
    """Train the perceptron on (features, labels) clips; returns the detector."""
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    inputs, targets = [], []
    for features, labels in examples:
        x = detector_inputs(features)
        x = x.reshape(-1, x.shape[-1])
        y = labels.reshape(-1)
        keep = (y == 1) | ((y == 0) & (rng.random(len(y)) < NEGATIVE_SHARE))
        inputs.append(x[keep])
        targets.append(y[keep])
    x = np.concatenate(inputs)
    y = np.concatenate(targets).astype(np.float32)
    if not y.any():
        raise ValueError("no contact among the training clips")
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x_t = torch.tensor((x - mean) / std, dtype=torch.float32)
    y_t = torch.tensor(y)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 1))
    optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=1e-5)
    # the square root of the class ratio: recall matters, but not at any price in precision
    positive_weight = torch.tensor(float(np.sqrt((1.0 - y.mean()) / y.mean())))
    loss_of = torch.nn.BCEWithLogitsLoss(pos_weight=positive_weight)
    for _epoch in range(epochs):
        order = torch.randperm(len(x_t))
        for start in range(0, len(x_t), BATCH):
            batch = order[start:start + BATCH]
            optimiser.zero_grad()
            loss = loss_of(net(x_t[batch]).squeeze(-1), y_t[batch])
            loss.backward()
            optimiser.step()
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    layers = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linear]
    return ContactDetector(mean, std, layers, info)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=400, help="train-split clips")
    parser.add_argument("--base-seed", type=int, default=0, help="the synthetic dataset seed")
    parser.add_argument("--jobs", type=int, default=1, help="processes computing features")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the fit")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--out", default=str(DETECTOR_FILE))
    args = parser.parse_args(argv)
    import torch

    from v2a_server.synth.dataset import clip_seeds

    torch.set_num_threads(args.threads)
    seeds = [seed for _split, _i, seed in clip_seeds(args.base_seed, {"train": args.clips})]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        examples = list(pool.map(_examples_of, seeds))
    t1 = time.perf_counter()
    positives = sum(int((labels == 1).sum()) for _f, labels in examples)
    print(f"features of {len(seeds)} train clips in {t1 - t0:.0f} s ({args.jobs} processes); "
          f"{positives} contact cells", flush=True)
    info = (f"train split, {len(seeds)} clips, base seed {args.base_seed}, {args.epochs} "
            f"epochs, hidden {HIDDEN}")
    detector = fit_detector(examples, epochs=args.epochs, info=info)
    detector.save(args.out)
    print(f"fitted in {time.perf_counter() - t1:.0f} s with {args.threads} torch threads: "
          f"{args.out}")


if __name__ == "__main__":
    main()
