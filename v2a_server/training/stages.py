"""The training stages of the paper's recipe, each as: trainable modules + a loss per batch.

- ``vae``   (a) mel VAE + HiFi-GAN vocoder of a small model (frozen afterwards);
- ``t2a``   (b) the text-to-audio prior: UNet on text only;
- ``onset`` (c) the onset pretext: video encoder + local path + onset head;
- ``joint`` (d) ControlNet + UNet with the onset loss, global tokens, CFG dropout and onset-hint
            dropout (so that editors' marker hints work at inference).
After ``vae`` the cache gets ``latents.npy``; after ``onset`` it gets ``features.npy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from v2a_server.models.mel import MelFrontEnd
from v2a_server.models.text import encode_text
from v2a_server.training.data import CachedSplit
from v2a_server.training.losses import diffusion_loss, diffusion_target, kl_loss, onset_loss, stft_loss


@dataclass
class StageOptions:
    """Knobs of the stages (defaults follow model.md §2 where the release states them)."""

    cfg_dropout: float = 0.1  # text zeroed per sample (release: guidance_free_rate 0.1)
    hint_dropout: float = 0.5  # share of samples trained WITHOUT hints
    hint_jitter_frames: int = 0  # random shift of given hints (robustness to sloppy markers)
    # Share of hinted samples whose audio (latents and hints together) is moved by up to
    # hint_shift_frames against the video: the model learns that given hints set the timing,
    # so an editor's moved or removed marker moves or removes the sound (issue 7).
    hint_shift_share: float = 0.0
    hint_shift_frames: int = 8
    onset_weight: float = 1.0  # λ in L = L_diff + λ L_onset
    onset_positive_weight: float = 5.0  # onset frames are rare
    snr_gamma: float | None = 5.0
    kl_weight: float = 1e-4
    vae_crop_frames: int = 256  # mel frames per VAE training crop (2.56 s)
    vocoder_crop_frames: int = 32  # mel frames per vocoder crop (0.32 s)
    vocoder_onset_crops: float = 0.5  # vocoder stage: share of crops centred on an onset
    vocoder_wave_weight: float = 0.0  # vocoder stage: weight of a waveform L1 term
    train_unet: bool = True  # the paper's figure trains it; the release's default freezes it


class Stage:
    name = ""
    needs: tuple[str, ...] = ()

    def __init__(self, pipe, options: StageOptions):
        self.pipe = pipe
        self.options = options
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def trainable(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def loss(self, split: CachedSplit, indices: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def finish(self, cache_splits: dict[str, CachedSplit]) -> None:
        """Work after training (e.g. writing derived arrays into the cache)."""

    # -- shared helpers --

    def text_states(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen text encoder output for captions, padded to a common length; cached per caption."""
        pipe = self.pipe
        outs = []
        for caption in captions:
            if caption not in self._text_cache:
                hidden, mask = encode_text(pipe.tokenizer, pipe.text_encoder, [caption])
                self._text_cache[caption] = (hidden[0].detach(), mask[0])
            outs.append(self._text_cache[caption])
        length = max(h.shape[0] for h, _ in outs)
        hidden = torch.zeros(len(outs), length, outs[0][0].shape[-1])
        mask = torch.zeros(len(outs), length, dtype=torch.bool)
        for i, (h, m) in enumerate(outs):
            hidden[i, : h.shape[0]] = h
            mask[i, : m.shape[0]] = m
        return hidden, mask

    def noisy_latents(self, latents: torch.Tensor, gen: torch.Generator):
        sched = self.pipe.scheduler
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
        return sched.add_noise(latents, noise, t), noise, t

    def context(self, captions, gen, global_tokens=None):
        """[text ; global tokens] with per-sample CFG dropout of the text (zeroed states, mask
        unchanged: the release's training-time "uncondition")."""
        text, mask = self.text_states(captions)
        text = self.pipe.conditioner.project_text(text)
        drop = torch.rand(len(captions), generator=gen) < self.options.cfg_dropout
        text = text * (~drop).float()[:, None, None]
        if global_tokens is None:
            return text, mask
        ones = torch.ones(len(captions), global_tokens.shape[1], dtype=torch.bool)
        return torch.cat([text, global_tokens], 1), torch.cat([mask, ones], 1)


class VaeVocoderStage(Stage):
    name = "vae"
    needs = ("audio",)

    def __init__(self, pipe, options):
        super().__init__(pipe, options)
        self.mel = MelFrontEnd(sample_rate=pipe.sample_rate)

    def trainable(self):
        return {"vae": self.pipe.vae, "vocoder": self.pipe.vocoder}

    def loss(self, split, indices, gen):
        opts, hop = self.options, self.mel.config.hop_length
        audio = torch.from_numpy(np.asarray(split.array("audio")[np.sort(indices)], np.float32))
        mel = self.mel(audio)  # [B, T, 64]
        # VAE on a random crop of the log-mel.
        start = int(torch.randint(0, mel.shape[1] - opts.vae_crop_frames + 1, (1,), generator=gen))
        x = mel[:, start : start + opts.vae_crop_frames].unsqueeze(1)
        posterior = self.pipe.vae.encode(x).latent_dist
        recon = self.pipe.vae.decode(posterior.sample(generator=gen)).sample
        vae_rec = (recon - x).abs().mean()
        vae_kl = kl_loss(posterior)
        # Vocoder on a shorter crop of the true mel → its waveform.
        crop = opts.vocoder_crop_frames
        start = int(torch.randint(0, mel.shape[1] - crop + 1, (1,), generator=gen))
        target = audio[:, start * hop : (start + crop) * hop]
        wave = self.pipe.vocoder(mel[:, start : start + crop])[:, : target.shape[1]]
        voc_stft = stft_loss(wave, target)
        voc_mel = (self.mel(wave)[:, : crop - 1] - mel[:, start : start + crop - 1]).abs().mean()
        total = vae_rec + opts.kl_weight * vae_kl + voc_stft + voc_mel
        return total, {"vae_rec": vae_rec.item(), "vae_kl": vae_kl.item(), "voc_stft": voc_stft.item(), "voc_mel": voc_mel.item()}

    @torch.no_grad()
    def finish(self, cache_splits):
        """Set the VAE scaling factor to 1 / std of training latents, then cache latents."""
        vae = self.pipe.vae.eval()
        train = cache_splits["train"]
        probe = np.arange(min(len(train), 64))
        means = self._encode(train, probe, scale=1.0)
        scaling = float(1.0 / means.std())
        vae.register_to_config(scaling_factor=scaling)
        for split in cache_splits.values():
            n = len(split)
            out = np.lib.format.open_memmap(split.dir / "latents.npy", "w+", np.float16, (n,) + tuple(means.shape[1:]))
            for i in range(0, n, 8):
                out[i : i + 8] = self._encode(split, np.arange(i, min(n, i + 8)), scaling).numpy().astype(np.float16)
            out.flush()

    def _encode(self, split, indices, scale):
        audio = torch.from_numpy(np.asarray(split.array("audio")[indices], np.float32))
        mel = self.mel(audio).unsqueeze(1)
        return self.pipe.vae.encode(mel).latent_dist.mean * scale


class VocoderStage(VaeVocoderStage):
    """(a') The vocoder alone, with crops centred on onsets for half of the samples: impacts
    are rare in Foley-like audio, and a vocoder trained on random crops learns the noise floor
    first. Run after ``vae`` to refine the vocoder; the VAE and the cache are left as they are."""

    name = "vocoder"

    def trainable(self):
        return {"vocoder": self.pipe.vocoder}

    def loss(self, split, indices, gen):
        opts, hop = self.options, self.mel.config.hop_length
        idx = np.sort(indices)
        audio = torch.from_numpy(np.asarray(split.array("audio")[idx], np.float32))
        mel = self.mel(audio)
        crop = opts.vocoder_crop_frames
        frames_per_latent = mel.shape[1] // split.labels.shape[1]
        starts = []
        for row, labels in enumerate(split.labels[idx]):
            onsets = np.flatnonzero(labels)
            if len(onsets) and float(torch.rand(1, generator=gen)) < opts.vocoder_onset_crops:
                pick = int(onsets[int(torch.randint(0, len(onsets), (1,), generator=gen))]) * frames_per_latent
                start = pick - int(torch.randint(0, crop // 2, (1,), generator=gen))
            else:
                start = int(torch.randint(0, mel.shape[1] - crop + 1, (1,), generator=gen))
            starts.append(min(max(start, 0), mel.shape[1] - crop))
        mels = torch.stack([mel[i, s : s + crop] for i, s in enumerate(starts)])
        target = torch.stack([audio[i, s * hop : (s + crop) * hop] for i, s in enumerate(starts)])
        wave = self.pipe.vocoder(mels)[:, : target.shape[1]]
        voc_stft = stft_loss(wave, target)
        voc_mel = (self.mel(wave)[:, : crop - 1] - mels[:, : crop - 1]).abs().mean()
        voc_wave = (wave - target).abs().mean()
        total = voc_stft + voc_mel + opts.vocoder_wave_weight * voc_wave
        return total, {"voc_stft": voc_stft.item(), "voc_mel": voc_mel.item(), "voc_wave": voc_wave.item()}

    def finish(self, cache_splits):
        """Nothing to cache: the latents belong to the VAE, which this stage leaves alone."""


class TextToAudioStage(Stage):
    name = "t2a"
    needs = ("latents",)

    def trainable(self):
        mods = {"unet": self.pipe.unet}
        if self.pipe.conditioner.text_projection is not None:
            mods["text_projection"] = self.pipe.conditioner.text_projection
        return mods

    def loss(self, split, indices, gen):
        latents = torch.from_numpy(np.asarray(split.array("latents")[np.sort(indices)], np.float32))
        captions = [split.captions[i] for i in np.sort(indices)]
        noisy, noise, t = self.noisy_latents(latents, gen)
        context, mask = self.context(captions, gen)
        pred = self.pipe.unet(noisy, t, encoder_hidden_states=context, encoder_attention_mask=mask).sample
        target = diffusion_target(self.pipe.scheduler, latents, noise, t)
        loss = diffusion_loss(pred, target, self.pipe.scheduler, t, self.options.snr_gamma)
        return loss, {"diffusion": loss.item()}


def features_from_frames(pipe, frames: np.ndarray, steps: np.ndarray) -> torch.Tensor:
    """Video encoder on cached frames [B, S, s, s, 3]; steps after each clip's end are zeroed."""
    feats = pipe.video_encoder(torch.from_numpy(np.ascontiguousarray(frames)))
    valid = torch.arange(feats.shape[1])[None, :] < torch.as_tensor(steps)[:, None]
    return feats * valid[..., None].to(feats.dtype)


class OnsetPretextStage(Stage):
    name = "onset"
    needs = ("frames",)

    def trainable(self):
        cond = self.pipe.conditioner
        return {"video_encoder": self.pipe.video_encoder, "trans_cvap_feature": cond.trans_cvap_feature, "pre_onset": cond.pre_onset}

    def loss(self, split, indices, gen):
        idx = np.sort(indices)
        feats = features_from_frames(self.pipe, split.array("frames")[idx], split.steps[idx])
        out = self.pipe.conditioner(feats, global_dropout=0.0)
        loss = onset_loss(out.onset_logits, torch.from_numpy(split.labels[idx]), self.options.onset_positive_weight)
        return loss, {"onset": loss.item()}

    @torch.no_grad()
    def finish(self, cache_splits):
        self.pipe.video_encoder.eval()
        for split in cache_splits.values():
            n = len(split)
            dim = self.pipe.conditioner.config.feature_dim
            out = np.lib.format.open_memmap(split.dir / "features.npy", "w+", np.float16, (n, split.array("frames").shape[1], dim))
            for i in range(0, n, 8):
                idx = np.arange(i, min(n, i + 8))
                out[idx] = features_from_frames(self.pipe, split.array("frames")[idx], split.steps[idx]).numpy().astype(np.float16)
            out.flush()


class JointStage(Stage):
    name = "joint"
    needs = ("latents", "features")

    def trainable(self):
        mods = {"controlnet": self.pipe.controlnet, "conditioner": self.pipe.conditioner}
        if self.options.train_unet:
            mods["unet"] = self.pipe.unet
        return mods

    def hint_given(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """[B] 1.0 for the samples trained with hints."""
        return (torch.rand(batch, generator=gen) >= self.options.hint_dropout).float()

    def audio_shifts(self, given: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """[B] latent-frame shift of each sample's audio against its video (0: none)."""
        k, share = self.options.hint_shift_frames, self.options.hint_shift_share
        shifts = torch.randint(-k, k + 1, (len(given),), generator=gen)
        chosen = (torch.rand(len(given), generator=gen) < share) & (given > 0)
        return torch.where(chosen, shifts, torch.zeros_like(shifts))

    def hints(self, labels: torch.Tensor, given: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """[B, F, 2]: the audio's onsets as hints for the given samples (flag 1), none for others."""
        b, f = labels.shape
        values = labels.float()
        jitter = self.options.hint_jitter_frames
        if jitter:
            shifts = torch.randint(-jitter, jitter + 1, (b,), generator=gen)
            values = torch.stack([torch.roll(v, int(s)) for v, s in zip(values, shifts)])
        values = values * given[:, None]
        return torch.stack([values, given[:, None].expand(b, f)], dim=-1)

    def loss(self, split, indices, gen):
        pipe, opts = self.pipe, self.options
        idx = np.sort(indices)
        feats = torch.from_numpy(np.asarray(split.array("features")[idx], np.float32))
        latents = torch.from_numpy(np.asarray(split.array("latents")[idx], np.float32))
        labels = torch.from_numpy(split.labels[idx])  # onsets of the video-aligned audio
        cond = pipe.conditioner(feats, generator=gen)
        control = cond.control
        if pipe.controlnet.config.num_hint_channels:
            given = self.hint_given(len(idx), gen)
            audio_labels = labels
            if opts.hint_shift_share > 0:
                shifts = self.audio_shifts(given, gen)
                # roll wraps a few frames around the clip's ends; cheaper than padding with
                # latents that would have to mean silence
                latents = torch.stack([torch.roll(x, int(k), dims=1) for x, k in zip(latents, shifts)])
                audio_labels = torch.stack([torch.roll(x, int(k)) for x, k in zip(labels, shifts)])
            control = torch.cat([control, self.hints(audio_labels, given, gen)], dim=-1)
        noisy, noise, t = self.noisy_latents(latents, gen)
        context, mask = self.context([split.captions[i] for i in idx], gen, cond.global_tokens)
        down, mid = pipe.controlnet(noisy, t, encoder_hidden_states=context, controlnet_cond=control, return_dict=False)
        pred = pipe.unet(
            noisy, t, encoder_hidden_states=context, encoder_attention_mask=mask,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        ).sample
        target = diffusion_target(pipe.scheduler, latents, noise, t)
        l_diff = diffusion_loss(pred, target, pipe.scheduler, t, opts.snr_gamma)
        l_onset = onset_loss(cond.onset_logits, labels, opts.onset_positive_weight)
        total = l_diff + opts.onset_weight * l_onset
        return total, {"diffusion": l_diff.item(), "onset": l_onset.item()}


STAGES = {cls.name: cls for cls in (VaeVocoderStage, VocoderStage, TextToAudioStage, OnsetPretextStage, JointStage)}
