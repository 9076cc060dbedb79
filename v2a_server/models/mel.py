"""Log-mel front-end of AudioLDM (TacotronSTFT), used to encode audio into VAE latents.

Reference (model.md §1.9): 16 kHz, n_fft 1024, hop 160, Hann window 1024, centred STFT with
reflect padding, magnitude, Slaney mel filters from librosa (64 bands, 0–8 kHz), natural log of
max(mel, 1e-5); no standardisation. 163,840 samples → 1025 frames, cropped to 1024.
"""

from __future__ import annotations

import librosa
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class MelFrontEnd(ModelMixin, ConfigMixin):
    """Waveform [B, samples] → log-mel [B, frames, n_mels] (frames = samples // hop)."""

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        win_length: int = 1024,
        n_mels: int = 64,
        fmin: float = 0.0,
        fmax: float = 8000.0,
    ):
        super().__init__()
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        # Buffers, not parameters: nothing here is trained, and they follow .to(device).
        self.register_buffer("mel_basis", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        spec = torch.stft(
            waveform.float(),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        mel = torch.matmul(self.mel_basis, spec)  # [B, n_mels, frames + 1]
        log_mel = torch.log(torch.clamp(mel, min=1e-5))
        frames = waveform.shape[-1] // cfg.hop_length
        return log_mel[:, :, :frames].transpose(1, 2)
