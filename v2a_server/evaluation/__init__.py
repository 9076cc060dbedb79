"""Evaluation: how well generated audio lines up with its video, and the picture that shows it.

``metrics``: AA-Align and AV-Align as the authors compute them, one-to-one variants, onset
precision / recall / F1, audio onsets and visual motion events (the server's review data uses
the same detectors). ``sync_picture``: the sync review PNG (motion, waveform, onsets).
``clip_sets``: which clips to score, their scores and one table, for ``v2a eval``
(``commands/eval.py``, a thin command).
"""
