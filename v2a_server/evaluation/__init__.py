"""Evaluation: how well generated audio lines up with its video, and the picture that shows it.

``metrics``: AA-Align and AV-Align as the authors compute them, one-to-one variants, onset
precision / recall / F1, audio onsets and visual motion events (the server's review data uses
the same detectors). ``sync_picture``: the sync review PNG (motion, waveform, onsets). The
``v2a eval`` command (``commands/eval.py``) scores files with ``metrics.evaluate_clip``.
"""
