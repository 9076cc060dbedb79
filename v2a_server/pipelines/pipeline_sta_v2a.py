"""STA-V2A as a diffusers ``DiffusionPipeline``: video (+ text) → Foley audio and onsets.

Follows the authors' inference code where it and the paper disagree (model.md §7):
- CFG guides the text only: the global video tokens and the ControlNet condition are the same
  in both halves; the unconditional text is the negative caption (the release uses "") padded
  to the conditional prompt's length, and the UNet gets the padding mask while the ControlNet
  sees no mask.
- The attentive pooling's unary dropout stays active at inference (seeded here, so a seed
  reproduces a take); ``deterministic=True`` switches it off.
- The temporal path runs at the config's video frame rate (reference 4 fps, nearest upsampling).
Extensions over the release: any duration (windows + equal-power crossfade, exact sample
count), batched variations, a DPM-Solver++ sampler, onset hints, latent inpainting of a time
range, onset markers from the (otherwise discarded) onset head, a progress/cancel hook.

The step hook is ``on_step(StepProgress)``, deliberately not diffusers'
``callback_on_step_end(pipe, i, t, callback_kwargs) -> dict``: it reports progress counted
across windows and stops a job by raising ``GenerationCancelled`` (nothing is decoded after a
cancel), while diffusers' hook edits tensors and its ``interrupt`` flag still decodes a result.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
)
from diffusers.utils import BaseOutput
from transformers import PreTrainedModel, PreTrainedTokenizerBase, SpeechT5HifiGan

from v2a_server.models.cavp import CAVPVideoEncoder
from v2a_server.models.conditioner import STAVideoConditioner
from v2a_server.models.controlnet import STAControlNetModel
from v2a_server.models.mel import MelFrontEnd
from v2a_server.models.text import encode_text
from v2a_server.pipelines.attacks import refine_onsets
from v2a_server.pipelines.onsets import pick_onsets
from v2a_server.pipelines.windows import WindowPlan, plan_windows, stitch

logger = logging.getLogger(__name__)

SAMPLERS = ("ddpm", "dpmpp")
DEFAULT_STEPS = {"ddpm": 200, "dpmpp": 25}
# Windows overlap by 31 latent frames (1.24 s): the 0.24 s tail without video plus a 1 s join.
WINDOW_OVERLAP_FRAMES = 31
CROSSFADE_FRAMES = 25


class GenerationCancelled(Exception):
    """Raised from the ``on_step`` hook to stop a generation at the next denoising step."""


@dataclass(frozen=True)
class StepProgress:
    """What the ``on_step`` hook is told after every denoising step."""

    step_index: int  # 0-based, counting across windows: window * steps + step in the window
    total_steps: int  # steps per window x windows
    window: int
    num_windows: int
    timestep: int  # the scheduler's timestep of this step
    stage: str = "denoise"


@dataclass(frozen=True)
class _DenoiseRun:
    """What every window's denoising loop of one call shares."""

    shape: tuple[int, ...]  # latents [variations, channels, window frames, freq bins]
    generator: torch.Generator
    sampler: str
    steps: int  # per window
    cond_text: torch.Tensor
    cond_mask: torch.Tensor
    uncond_text: torch.Tensor | None  # None: no classifier-free guidance
    uncond_mask: torch.Tensor | None
    guidance_scale: float
    use_controlnet: bool
    controlnet_scale: float
    num_windows: int
    on_step: Callable[[StepProgress], None] | None


def range_ramp(times_s: np.ndarray, range_s, ramp_s: float) -> np.ndarray:
    """1 inside ``range_s``, 0 further than ``ramp_s`` outside it, linear in between: where a
    regenerated range replaces the kept audio (latent mask and waveform join alike)."""
    start, end = range_s
    return np.minimum(np.clip((times_s - (start - ramp_s)) / ramp_s, 0, 1),
                      np.clip(((end + ramp_s) - times_s) / ramp_s, 0, 1))


@dataclass
class STAV2APipelineOutput(BaseOutput):
    """Result of one generation.

    Attributes:
        audio: float32 [num_variations, samples] at ``sample_rate``; samples =
            round(duration_s * sample_rate) exactly.
        sample_rate: 16000.
        onset_probs: float32 [latent frames] onset probability per 40 ms frame (whole duration).
        onset_times_s / onset_strengths: onsets and their probabilities: the onset head's peaks
            less the model's ``onset_latency_s``, each on the audible attack of the audio
            (``pipelines.attacks.refine_onsets``) unless asked not to.
        seed: the seed actually used.
        timings_s: seconds per stage.
        warnings: notes for the user (e.g. hints ignored by a model trained without them).
        guidance_scale: the CFG scale used (the model's default when none was asked).
    """

    audio: np.ndarray
    sample_rate: int
    onset_probs: np.ndarray
    onset_times_s: list[float]
    onset_strengths: list[float]
    seed: int
    timings_s: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    guidance_scale: float = 3.0


class _StageTimer:
    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)

    def __call__(self, stage: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.totals[stage] += time.perf_counter() - self.t0

        return _Span()


class STAV2APipeline(DiffusionPipeline):
    """Video-to-audio with STA-V2A.

    Components: ``video_encoder`` (CAVP, optional when features are given), ``conditioner``
    (local onset path + attentive pooling), ``tokenizer`` + ``text_encoder`` (any transformers
    encoder), ``unet`` (T2A prior), ``controlnet`` (video ControlNet), ``scheduler`` (DDPM; the
    DPM-Solver++ sampler is derived from its config), ``vae`` (mel VAE), ``vocoder`` (HiFi-GAN).
    """

    # The model offload chain: each component's hook moves the one before it off the device.
    # The ControlNet stays out of it (diffusers' ControlNet pipelines do the same): it alternates
    # with the UNet at every step, and in the chain one of the two would move at every step.
    model_cpu_offload_seq = "text_encoder->video_encoder->conditioner->unet->vae->vocoder"
    _optional_components = ["video_encoder"]

    def __init__(
        self,
        *,  # nine components: named, never placed by position
        video_encoder: CAVPVideoEncoder | None,
        conditioner: STAVideoConditioner,
        tokenizer: PreTrainedTokenizerBase,
        text_encoder: PreTrainedModel,
        unet: UNet2DConditionModel,
        controlnet: STAControlNetModel,
        scheduler: DDPMScheduler,
        vae: AutoencoderKL,
        vocoder: SpeechT5HifiGan,
        default_guidance_scale: float = 3.0,
        default_controlnet_scale: float = 1.0,
        caption_prefix: str = "",
        onset_latency_s: float = 0.0,
        onsets_on_attacks: bool = True,
    ):
        super().__init__()
        # A model's own tuned sampling defaults travel in its model_index.json (measured per
        # model: the embedded default model aligns best with a stronger ControlNet), and so does
        # the text its training run put before every caption (the release's summary.jsonl
        # ``prefix``), so that a request's caption reads as the model was trained on it. Its
        # onset head's latency too: it learned librosa's labels, which come after the audible
        # attack (measured on validation clips by bench/onset_latency.py), and whether its
        # onsets are moved onto the attacks of its audio (a random-weight test model makes
        # digital silence, where every onset would go).
        self.register_to_config(default_guidance_scale=float(default_guidance_scale),
                                default_controlnet_scale=float(default_controlnet_scale),
                                caption_prefix=str(caption_prefix),
                                onset_latency_s=float(onset_latency_s),
                                onsets_on_attacks=bool(onsets_on_attacks))
        self.register_modules(
            video_encoder=video_encoder,
            conditioner=conditioner,
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            unet=unet,
            controlnet=controlnet,
            scheduler=scheduler,
            vae=vae,
            vocoder=vocoder,
        )

    # ---- placement: device, offload, the text encoder on the CPU ---------------------------

    def keep_text_encoder_on_cpu(self) -> None:
        """Run the text encoder on the CPU in float32 whatever the pipeline's device and dtype
        (once per request, a few tokens; float32 because CPU half-precision kernels are slow or
        missing). It leaves the offload chain."""
        self.text_encoder.to("cpu", torch.float32)
        self._exclude_from_cpu_offload = ["text_encoder"]

    def enable_model_offload(self, device: str | torch.device) -> None:
        """diffusers' model CPU offload onto ``device``, honouring ``keep_text_encoder_on_cpu``."""
        if "text_encoder" in self._exclude_from_cpu_offload:
            self.model_cpu_offload_seq = "->".join(
                name for name in type(self).model_cpu_offload_seq.split("->") if name != "text_encoder")
        self.enable_model_cpu_offload(device=device)
        if "text_encoder" in self._exclude_from_cpu_offload:
            self.text_encoder.to("cpu")  # diffusers moves an excluded component to the device

    def _offload_all(self) -> None:
        """After a call under model offload: every component back to the CPU. (Not diffusers'
        ``maybe_free_model_hooks``: it re-enables offload, which would move a text encoder kept
        on the CPU to the device.)"""
        for hook in getattr(self, "_all_hooks", ()):
            hook.offload()

    # ---- facts about the loaded model -------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return int(self.vocoder.config.sampling_rate)

    @property
    def model_fps(self) -> float:
        """Frame rate at which the model reads video."""
        return float(self.conditioner.config.video_fps)

    @property
    def latent_fps(self) -> float:
        return float(self.conditioner.config.latent_fps)

    @property
    def samples_per_latent_frame(self) -> int:
        return round(self.sample_rate / self.latent_fps)

    @property
    def window_s(self) -> float:
        return self.conditioner.config.latent_frames_per_window / self.latent_fps

    @property
    def model_id(self) -> str:
        return str(self.config.get("_name_or_path", "") or "unnamed")

    def window_plan(self, duration_s: float) -> WindowPlan:
        frames = self.conditioner.config.latent_frames_per_window
        return plan_windows(
            duration_s,
            self.sample_rate,
            frames,
            self.samples_per_latent_frame,
            frames - WINDOW_OVERLAP_FRAMES,
            CROSSFADE_FRAMES,
        )

    # ---- 0. validation ----------------------------------------------------------------------

    def check_inputs(
        self, frames, frames_fps, video_features, duration_s, *, sampler, steps, guidance_scale,
        num_variations, onset_hints, inpaint_audio, inpaint_range_s,
    ) -> None:
        if (frames is None) == (video_features is None):
            raise ValueError("give exactly one of `frames` (RGB uint8 [T,H,W,3]) or `video_features`")
        if frames is not None:
            if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                got = getattr(frames, "shape", type(frames).__name__)
                raise ValueError(f"`frames` must be a uint8 array [T,H,W,3], got {got} {getattr(frames, 'dtype', '')}")
            if frames.shape[0] == 0:
                raise ValueError("`frames` is empty: at least one frame is needed")
            if not frames_fps or frames_fps <= 0:
                raise ValueError(f"`frames_fps` must be > 0, got {frames_fps!r}")
            if self.video_encoder is None:
                raise ValueError("this pipeline has no video_encoder: pass `video_features` instead of frames")
        else:
            dim = self.conditioner.config.feature_dim
            if video_features.ndim != 2 or video_features.shape[1] != dim:
                raise ValueError(f"`video_features` must be [steps, {dim}] at {self.model_fps} fps, got {tuple(video_features.shape)}")
        if duration_s is None or not (duration_s > 0):
            raise ValueError(f"`duration_s` must be > 0, got {duration_s!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}")
        if steps is not None and not (1 <= steps <= 1000):
            raise ValueError(f"`num_inference_steps` must be in 1..1000, got {steps}")
        if not (guidance_scale >= 1.0):
            raise ValueError(f"`guidance_scale` must be >= 1.0, got {guidance_scale}")
        if not (1 <= num_variations <= 16):
            raise ValueError(f"`num_variations` must be in 1..16, got {num_variations}")
        n_frames = self.window_plan(duration_s).total_frames
        if onset_hints is not None and np.asarray(onset_hints).shape != (n_frames,):
            raise ValueError(
                f"`onset_hints` must have one value per {1000 / self.latent_fps:.0f} ms latent frame: "
                f"shape ({n_frames},) for {duration_s} s, got {np.asarray(onset_hints).shape}"
            )
        if (inpaint_audio is None) != (inpaint_range_s is None):
            raise ValueError("`inpaint_audio` and `inpaint_range_s` go together")
        if inpaint_range_s is not None:
            start, end = inpaint_range_s
            if not (0 <= start < end <= duration_s + 1e-9):
                raise ValueError(f"`inpaint_range_s` must satisfy 0 <= start < end <= duration_s={duration_s}, got {inpaint_range_s}")
            expected = round(duration_s * self.sample_rate)
            if np.asarray(inpaint_audio).shape != (expected,):
                raise ValueError(f"`inpaint_audio` must be mono float [{expected}] at {self.sample_rate} Hz, got {np.asarray(inpaint_audio).shape}")

    # ---- 1. video ---------------------------------------------------------------------------

    def sample_frame_indices(self, num_frames: int, frames_fps: float, num_steps: int) -> np.ndarray:
        """Nearest source frame for each model step t = k / model_fps; -1 where the video ended."""
        times = np.arange(num_steps) / self.model_fps
        idx = np.round(times * frames_fps).astype(np.int64)
        idx[times >= num_frames / frames_fps] = -1
        return np.minimum(idx, num_frames - 1)

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, frames_fps: float, num_steps: int) -> torch.Tensor:
        """RGB frames → CAVP features [num_steps, D] at the model's frame rate (zero rows after
        the video ends, as the release pads)."""
        idx = self.sample_frame_indices(len(frames), frames_fps, num_steps)
        valid = idx >= 0
        device = self._execution_device
        feats = torch.zeros(num_steps, self.conditioner.config.feature_dim, device=device, dtype=self.conditioner.dtype)
        if valid.any():
            chunk = self.conditioner.config.video_steps_per_window
            picked = frames[idx[valid]]
            out = []
            for i in range(0, len(picked), chunk):  # the release encodes 40 frames as one clip
                clip = torch.from_numpy(np.ascontiguousarray(picked[i : i + chunk]))[None].to(device)
                out.append(self.video_encoder(clip)[0])
            feats[torch.from_numpy(valid).to(device)] = torch.cat(out).to(feats.dtype)
        return feats

    # ---- 2. text ----------------------------------------------------------------------------

    def conditioning_caption(self, caption: str) -> str:
        """The text the encoder reads for ``caption``: the model's ``caption_prefix`` + caption.
        Only the caption: the reference prepends the prefix to the prompts and encodes its
        unconditional "" as is."""
        return self.config.caption_prefix + caption

    def encode_prompts(self, caption: str, negative_caption: str, do_cfg: bool):
        """Conditional (and unconditional) text states projected to the context width."""
        caption = self.conditioning_caption(caption)
        cond, cond_mask = encode_text(self.tokenizer, self.text_encoder, [caption])
        if not do_cfg:
            return (*self._project_text(cond, cond_mask), None, None)
        # The release pads the unconditional prompt to the conditional one's length.
        length = cond.shape[1]
        uncond, uncond_mask = encode_text(self.tokenizer, self.text_encoder, [negative_caption], pad_to=length)
        if uncond.shape[1] > length:  # a longer negative caption: pad the conditional side instead
            cond, cond_mask = encode_text(self.tokenizer, self.text_encoder, [caption], pad_to=uncond.shape[1])
        return (*self._project_text(cond, cond_mask), *self._project_text(uncond, uncond_mask))

    def _project_text(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states → the context width, both on the execution device. The projection runs
        where the conditioner's weights are: it is not the conditioner's forward, so under
        offload no hook brings them to the device; the text may come from a CPU encoder."""
        states = self.conditioner.project_text(states.to(self.conditioner.device, self.conditioner.dtype))
        device = self._execution_device
        return states.to(device), mask.to(device)

    # ---- 3. sampler -------------------------------------------------------------------------

    def make_scheduler(self, sampler: str):
        if sampler == "ddpm":
            return DDPMScheduler.from_config(self.scheduler.config)
        return DPMSolverMultistepScheduler.from_config(
            self.scheduler.config, algorithm_type="dpmsolver++", solver_order=2
        )

    # ---- 4. latent inpainting ---------------------------------------------------------------

    @torch.no_grad()
    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Waveform [B, window_samples] → scaled latents [B, C, frames, bins] (posterior mean)."""
        mel = MelFrontEnd(sample_rate=self.sample_rate).to(audio.device)(audio.float())
        moments = self.vae.encode(mel.unsqueeze(1).to(self.vae.dtype)).latent_dist
        return moments.mean * self.vae.config.scaling_factor

    def inpaint_mask(self, plan: WindowPlan, window: int, range_s, margin_s: float) -> np.ndarray:
        """Per latent frame of one window: 1 = generate, 0 = keep; linear ramps of margin_s."""
        frame_s = 1.0 / self.latent_fps
        centres = (plan.start_frame(window) + np.arange(plan.window_frames) + 0.5) * frame_s
        return range_ramp(centres, range_s, max(margin_s, 1e-6)).astype(np.float32)

    # ---- the recipe -------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        frames: np.ndarray | None = None,
        frames_fps: float | None = None,
        video_features: torch.Tensor | np.ndarray | None = None,
        duration_s: float | None = None,
        caption: str = "",
        negative_caption: str = "",
        seed: int | None = None,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str = "dpmpp",
        num_variations: int = 1,
        onset_hints: np.ndarray | None = None,
        inpaint_audio: np.ndarray | None = None,
        inpaint_range_s: tuple[float, float] | None = None,
        inpaint_margin_s: float = 0.2,
        deterministic: bool = False,
        controlnet_conditioning_scale: float | None = None,
        video_conditioning: bool = True,
        onset_threshold: float = 0.5,
        onsets_on_attacks: bool | None = None,
        on_step: Callable[[StepProgress], None] | None = None,
    ) -> STAV2APipelineOutput:
        """Generate Foley for a video.

        Args:
            frames: uint8 RGB [T, H, W, 3]; frame 0 is t = 0 of the output audio.
            frames_fps: frame rate of ``frames``.
            video_features: instead of frames, CAVP features [steps, D] at ``model_fps``.
            duration_s: output length in seconds (any length; exact to the sample).
            caption / negative_caption: text guidance and its CFG counterpart.
            seed: random seed (None draws one; the one used is returned).
            num_inference_steps: default 200 for ``ddpm``, 25 for ``dpmpp``.
            guidance_scale: CFG scale (1.0 = conditional branch only); None: the model's
                ``default_guidance_scale``.
            sampler: "ddpm" (reference) or "dpmpp" (DPM-Solver++ multistep).
            num_variations: takes generated as one batch.
            onset_hints: [latent frames] 0/1 or probabilities per 40 ms frame over the whole
                duration; ignored (with a warning) by a model trained without hints.
            inpaint_audio / inpaint_range_s: regenerate only (start_s, end_s) of this 16 kHz
                take; outside the range (beyond ``inpaint_margin_s``) the result is this audio.
            deterministic: switch off the attentive pooling's always-on dropout.
            controlnet_conditioning_scale: 0 runs the UNet without the ControlNet; None: the
                model's ``default_controlnet_scale``.
            video_conditioning: False drops both video paths (ControlNet and global tokens):
                the text-to-audio prior alone, for ablations.
            onsets_on_attacks: move each onset onto the audible attack of the generated
                audio and drop onsets with nothing audible (``pipelines.attacks``); False: the
                onset head's peaks, only moved earlier by the model's ``onset_latency_s``;
                None: the model's ``onsets_on_attacks`` (True unless its folder says not).
            on_step: called after every denoising step with a ``StepProgress``; raise
                ``GenerationCancelled`` from it to stop (not diffusers' callback contract).
        """
        # 0. validate and plan
        sampler = sampler.lower()
        if guidance_scale is None:
            guidance_scale = self.config.default_guidance_scale
        if controlnet_conditioning_scale is None:
            controlnet_conditioning_scale = self.config.default_controlnet_scale
        self.check_inputs(
            frames, frames_fps, video_features, duration_s, sampler=sampler,
            steps=num_inference_steps, guidance_scale=guidance_scale, num_variations=num_variations,
            onset_hints=onset_hints, inpaint_audio=inpaint_audio, inpaint_range_s=inpaint_range_s,
        )
        steps = num_inference_steps or DEFAULT_STEPS[sampler]
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if seed is None else int(seed)
        generator = torch.Generator("cpu").manual_seed(seed)
        timer = _StageTimer()
        warnings: list[str] = []
        plan = self.window_plan(duration_s)
        cfg = self.conditioner.config
        fps_ratio = self.model_fps / self.latent_fps
        video_hop = plan.hop_frames * fps_ratio
        if abs(video_hop - round(video_hop)) > 1e-6:
            raise ValueError(f"window hop of {plan.hop_frames} latent frames is not a whole number of video steps at {self.model_fps} fps")
        video_hop = round(video_hop)
        steps_per_window = cfg.video_steps_per_window
        total_video_steps = video_hop * (plan.num_windows - 1) + steps_per_window
        do_cfg = guidance_scale != 1.0
        use_controlnet = controlnet_conditioning_scale != 0.0 and video_conditioning
        if onset_hints is not None and not self.controlnet.config.num_hint_channels:
            warnings.append("this model was trained without onset hints: the hints were ignored")
            logger.warning(warnings[-1])
            onset_hints = None

        # 1. video features for the whole duration, at the model's frame rate
        with timer("video_encoder"):
            if frames is not None:
                features = self.encode_video(frames, frames_fps, total_video_steps)
            else:
                device = self._execution_device
                given = torch.as_tensor(np.asarray(video_features), dtype=self.conditioner.dtype, device=device)
                features = torch.zeros(total_video_steps, given.shape[1], dtype=given.dtype, device=device)
                features[: min(len(given), total_video_steps)] = given[:total_video_steps]

        # 2. text
        with timer("text_encoder"):
            cond_text, cond_mask, uncond_text, uncond_mask = self.encode_prompts(caption, negative_caption, do_cfg)

        # 3. per window: condition, denoise, decode
        latent_shape = (
            num_variations,
            self.unet.config.in_channels,
            plan.window_frames,
            self.controlnet.config.latent_freq_bins,
        )
        run = _DenoiseRun(
            shape=latent_shape, generator=generator, sampler=sampler, steps=steps,
            cond_text=cond_text, cond_mask=cond_mask, uncond_text=uncond_text,
            uncond_mask=uncond_mask, guidance_scale=guidance_scale, use_controlnet=use_controlnet,
            controlnet_scale=controlnet_conditioning_scale, num_windows=plan.num_windows,
            on_step=on_step,
        )
        windows_audio, windows_onsets = [], []
        for w in range(plan.num_windows):
            window_feats = features[w * video_hop : w * video_hop + steps_per_window][None]
            with timer("conditioner"):
                # One batch of variations: the local path is the same for all of them, the
                # global tokens differ through the pooling's seeded dropout.
                cond = self.conditioner(
                    window_feats.expand(num_variations, -1, -1),
                    global_dropout=0.0 if deterministic else None,
                    generator=generator,
                )
                windows_onsets.append(cond.onset_logits[0].float().softmax(-1)[:, 1].cpu().numpy())
                tokens, control = cond.global_tokens, cond.control
                if not video_conditioning:
                    tokens = tokens[:, :0]
                if self.controlnet.config.num_hint_channels:
                    control = torch.cat([control, self._window_hints(onset_hints, plan, w, num_variations)], dim=-1)

            known = mask = None
            if inpaint_range_s is not None:
                mask_np = self.inpaint_mask(plan, w, inpaint_range_s, inpaint_margin_s)
                if not mask_np.any():  # nothing to regenerate here: keep the source audio
                    piece = self._window_source_audio(inpaint_audio, plan, w)
                    windows_audio.append(np.repeat(piece[None], num_variations, 0))
                    continue
                with timer("vae_encode"):
                    known = self._window_source_latents(inpaint_audio, plan, w)
                mask = torch.from_numpy(mask_np).to(known.device, known.dtype)[None, None, :, None]

            with timer("denoise"):
                latents = self._denoise(run, w, tokens, control, known, mask)
            with timer("vae_decode"):
                mel = self.vae.decode(latents / self.vae.config.scaling_factor).sample
            with timer("vocoder"):
                wave = self.vocoder(mel.squeeze(1).to(self.vocoder.dtype))
            windows_audio.append(wave[:, : plan.window_samples].float().cpu().numpy())

        # 4. join windows, cut to the exact length, composite an inpainted range
        audio = stitch(windows_audio, plan, per_sample=True)
        if inpaint_range_s is not None:
            audio = self._composite_range(audio, np.asarray(inpaint_audio, np.float32), inpaint_range_s, inpaint_margin_s)
        # 5. onsets: the head's peaks, moved earlier by its latency, then onto the attacks
        onset_probs = stitch([p[None] for p in windows_onsets], plan, per_sample=False)[0]
        times, strengths = pick_onsets(onset_probs, 1.0 / self.latent_fps, onset_threshold)
        times = [max(0.0, t - self.config.onset_latency_s) for t in times]
        if onsets_on_attacks is None:
            onsets_on_attacks = self.config.get("onsets_on_attacks", True)
        if onsets_on_attacks:
            with timer("onsets"):
                times, strengths = refine_onsets(times, strengths, audio, self.sample_rate)
        self._offload_all()
        return STAV2APipelineOutput(
            audio=audio,
            sample_rate=self.sample_rate,
            onset_probs=onset_probs,
            onset_times_s=times,
            onset_strengths=strengths,
            seed=seed,
            timings_s=dict(timer.totals),
            warnings=warnings,
            guidance_scale=float(guidance_scale),
        )

    # ---- helpers of the recipe --------------------------------------------------------------

    def _window_hints(self, onset_hints, plan: WindowPlan, window: int, batch: int) -> torch.Tensor:
        """[batch, window_frames, 2]: hint value and a 0/1 flag saying a hint was given."""
        hints = torch.zeros(plan.window_frames, 2)
        if onset_hints is not None:
            start = plan.start_frame(window)
            piece = torch.as_tensor(np.asarray(onset_hints, np.float32)[start : start + plan.window_frames])
            hints[: len(piece), 0] = piece
            hints[: len(piece), 1] = 1.0
        return hints.to(self._execution_device, self.conditioner.dtype)[None].expand(batch, -1, -1)

    @staticmethod
    def _window_source_audio(inpaint_audio, plan: WindowPlan, window: int) -> np.ndarray:
        """One window of the source take, zero-padded past its end: [window_samples]."""
        start = plan.start_frame(window) * plan.samples_per_frame
        piece = np.zeros(plan.window_samples, np.float32)
        src = np.asarray(inpaint_audio, np.float32)[start : start + plan.window_samples]
        piece[: len(src)] = src
        return piece

    def _window_source_latents(self, inpaint_audio, plan: WindowPlan, window: int) -> torch.Tensor:
        piece = self._window_source_audio(inpaint_audio, plan, window)
        return self.encode_audio(torch.from_numpy(piece)[None].to(self._execution_device)).to(self.unet.dtype)

    def _composite_range(self, new: np.ndarray, old: np.ndarray, range_s, margin_s: float) -> np.ndarray:
        """Old audio outside the range, new inside, equal-power joins of margin_s at both ends."""
        sr = self.sample_rate
        n = old.shape[0]
        x = range_ramp((np.arange(n) + 0.5) / sr, range_s, max(margin_s, 1.0 / sr))
        gain_new = np.sin(x * np.pi / 2)
        gain_old = np.cos(x * np.pi / 2)
        return (new * gain_new + old[None] * gain_old).astype(np.float32)

    def _denoise(self, run: _DenoiseRun, window: int, tokens: torch.Tensor, control: torch.Tensor,
                 known: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        """One window's latents: ``known``/``mask`` (both or neither) keep the latents where
        mask is 0 (an inpainted range)."""
        cond_text, cond_mask = run.cond_text, run.cond_mask
        uncond_text, uncond_mask = run.uncond_text, run.uncond_mask
        scheduler = self.make_scheduler(run.sampler)
        device = self._execution_device
        scheduler.set_timesteps(run.steps, device=device)
        dtype = self.unet.dtype
        noise = torch.randn(run.shape, generator=run.generator).to(device, dtype)
        latents = noise * scheduler.init_noise_sigma
        batch = run.shape[0]
        ones = torch.ones(batch, tokens.shape[1], dtype=torch.bool, device=device)

        # Context = [text ; global video tokens]; video tokens are in both CFG halves.
        context = torch.cat([cond_text.expand(batch, -1, -1), tokens], dim=1).to(dtype)
        ctx_mask = torch.cat([cond_mask.expand(batch, -1), ones], dim=1)
        control = control.to(dtype)
        if uncond_text is not None:
            context = torch.cat([torch.cat([uncond_text.expand(batch, -1, -1), tokens], 1).to(dtype), context])
            ctx_mask = torch.cat([torch.cat([uncond_mask.expand(batch, -1), ones], 1), ctx_mask])
            control = torch.cat([control, control])

        for i, t in enumerate(scheduler.timesteps):
            model_in = torch.cat([latents, latents]) if uncond_text is not None else latents
            model_in = scheduler.scale_model_input(model_in, t)
            down_res = mid_res = None
            if run.use_controlnet:
                # The release's ControlNet cross-attention sees no padding mask.
                down_res, mid_res = self.controlnet(
                    model_in, t, encoder_hidden_states=context, controlnet_cond=control,
                    conditioning_scale=run.controlnet_scale, return_dict=False,
                )
            pred = self.unet(
                model_in, t, encoder_hidden_states=context, encoder_attention_mask=ctx_mask,
                down_block_additional_residuals=down_res, mid_block_additional_residual=mid_res,
            ).sample
            if uncond_text is not None:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + run.guidance_scale * (pred_cond - pred_uncond)
            latents = scheduler.step(pred, t, latents, generator=run.generator).prev_sample
            if known is not None:
                # Keep the known latents outside the range, noised to the next step's level.
                is_last = i == len(scheduler.timesteps) - 1
                if is_last:
                    reference = known
                else:
                    reference = scheduler.add_noise(known, noise, scheduler.timesteps[i + 1 : i + 2])
                latents = mask * latents + (1 - mask) * reference
            if run.on_step is not None:
                run.on_step(StepProgress(
                    step_index=window * run.steps + i, total_steps=run.steps * run.num_windows,
                    window=window, num_windows=run.num_windows, timestep=int(t),
                ))
        return latents
