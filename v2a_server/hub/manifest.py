"""Every file a named model is made from, and where it comes from: the one list of sources.

A ``Source`` is a Hugging Face repository at a revision (or ``builtin``: written from
``v2a_server.configs``); a ``Part`` is one file in it. Names that nobody here could check against
the real repositories are ``verified=False``; the user can move any source (``--repo``) or file
(``--file``) and pin a hash (``--sha256``) from the command line (``ManifestOverrides``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

# A revision pinned by commit, or a branch/tag name.
DEFAULT_REVISION = "main"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Source:
    """A repository (or the built-in configs) that some parts of a model come from."""

    key: str
    what: str
    repo_id: str | None  # None: written from v2a_server.configs (``builtin``)
    revision: str = DEFAULT_REVISION
    verified: bool = False
    # A single local file that stands in for the whole source when --from-dir holds it
    # (e.g. AudioLDM's original audioldm-s-full.ckpt instead of the diffusers vae/ + vocoder/).
    whole_file: str | None = None
    builtin_config: str | None = None  # the named config the builtin files are written from

    @property
    def builtin(self) -> bool:
        return self.repo_id is None

    def describe(self) -> str:
        return f"builtin ({self.builtin_config} config)" if self.builtin else f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class Part:
    """One file: its path in the source, other paths it may have there, and what it must be."""

    key: str
    source: str
    path: str
    alternatives: tuple[str, ...] = ()  # tried in order when ``path`` is not there (HTTP 404)
    size: int | None = None
    sha256: str | None = None
    verified: bool = False
    optional: bool = False  # skipped when no candidate path exists

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.path, *self.alternatives)


@dataclass(frozen=True)
class ModelManifest:
    name: str
    description: str
    scope: str  # what the model knows: shown by `v2a model list`, recorded with the install
    sources: tuple[Source, ...]
    parts: tuple[Part, ...]

    def source(self, key: str) -> Source:
        for source in self.sources:
            if source.key == key:
                return source
        raise KeyError(key)

    def parts_of(self, source_key: str) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if p.source == source_key)

    def part(self, key: str) -> Part:
        for part in self.parts:
            if part.key == key:
                return part
        raise KeyError(key)


# ---- the released STA-V2A model (design/model.md §4) ----------------------------------------------

STA_V2A = ModelManifest(
    name="sta-v2a",
    description="the released STA-V2A model (Ren et al.), converted for this server",
    scope="general video-to-audio (trained on VGGSound): vehicles, animals, water, music, impacts",
    sources=(
        Source("release", "the STA-V2A release: training args + all trained weights", "y-ren16/STAV2A"),
        Source("cavp", "Diff-Foley's CAVP video encoder", "SimianLuo/Diff-Foley"),
        Source(
            "audioldm", "AudioLDM-S VAE + HiFi-GAN vocoder (diffusers format)", "cvssp/audioldm",
            whole_file="audioldm-s-full.ckpt",
        ),
        Source("text", "mT5 text-encoder config + tokenizer (weights come from the release)", "google/mt5-large"),
        # The UNet config (head counts are not in the weights) and the DDPM scheduler config: the
        # summary names folders that are not part of the release; these are the shapes model.md
        # derives (128-base UNet, Tango's SD-2.1 scheduler). The converter refuses a UNet that does
        # not fit the release's ControlNet.
        Source("prior", "UNet + scheduler configs", None, builtin_config="sta-v2a"),
    ),
    parts=(
        # Paths inside the release repo follow the release's inf.sh (saved/STA-V2A/...); unverified.
        Part("summary", "release", "saved/STA-V2A/summary.jsonl",
             alternatives=("STA-V2A/summary.jsonl", "summary.jsonl")),
        Part("weights", "release", "saved/STA-V2A/best/pytorch_model_2.bin",
             alternatives=("STA-V2A/best/pytorch_model_2.bin", "best/pytorch_model_2.bin", "pytorch_model_2.bin")),
        Part("cavp", "cavp", "diff_foley_ckpt/cavp_epoch66.ckpt", alternatives=("cavp_epoch66.ckpt",)),
        Part("vae_config", "audioldm", "vae/config.json"),
        Part("vae_weights", "audioldm", "vae/diffusion_pytorch_model.safetensors",
             alternatives=("vae/diffusion_pytorch_model.bin",)),
        Part("vocoder_config", "audioldm", "vocoder/config.json"),
        Part("vocoder_weights", "audioldm", "vocoder/model.safetensors", alternatives=("vocoder/pytorch_model.bin",)),
        Part("text_config", "text", "config.json"),
        Part("tokenizer_config", "text", "tokenizer_config.json"),
        Part("special_tokens_map", "text", "special_tokens_map.json", optional=True),
        # A fast tokenizer file if the repo has one, else SentencePiece's model (needs `sentencepiece`).
        Part("tokenizer", "text", "tokenizer.json", alternatives=("spiece.model",)),
        Part("unet_config", "prior", "unet/config.json"),
        Part("scheduler_config", "prior", "scheduler/scheduler_config.json"),
    ),
)

MANIFESTS = {m.name: m for m in (STA_V2A,)}


def get_manifest(name: str) -> ModelManifest:
    if name not in MANIFESTS:
        raise ValueError(f"no model named {name!r} can be pulled; known: {', '.join(sorted(MANIFESTS))}")
    return MANIFESTS[name]


# ---- overrides from the command line ----------------------------------------------------------------


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


@dataclass
class ManifestOverrides:
    """``--repo SOURCE=REPO_ID[@REVISION]``, ``--file PART=PATH``, ``--sha256 PART=HEX``."""

    repos: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, repos=None, files=None, sha256=None) -> ManifestOverrides:
        return cls(_pairs(repos, "--repo"), _pairs(files, "--file"), _pairs(sha256, "--sha256"))

    def apply(self, manifest: ModelManifest) -> ModelManifest:
        source_keys = {s.key for s in manifest.sources}
        part_keys = {p.key for p in manifest.parts}
        for flag, keys, known in (("--repo", self.repos, source_keys), ("--file", self.files, part_keys),
                                  ("--sha256", self.sha256, part_keys)):
            unknown = sorted(set(keys) - known)
            if unknown:
                raise ValueError(f"{flag}: {', '.join(unknown)} is not one of {', '.join(sorted(known))}")
        for key, digest in self.sha256.items():
            if not _SHA256.match(digest.lower()):
                raise ValueError(f"--sha256 {key}=…: expected 64 hex digits, got {digest!r}")
        sources = []
        for source in manifest.sources:
            if source.key in self.repos:
                repo_id, _, revision = self.repos[source.key].partition("@")
                # A user-named repo is what the user vouches for.
                source = dataclasses.replace(source, repo_id=repo_id, revision=revision or DEFAULT_REVISION,
                                             verified=True, builtin_config=None)
            sources.append(source)
        parts = []
        for part in manifest.parts:
            if part.key in self.files:
                part = dataclasses.replace(part, path=self.files[part.key], alternatives=(), size=None,
                                           sha256=None, verified=True)
            if part.key in self.sha256:
                part = dataclasses.replace(part, sha256=self.sha256[part.key].lower())
            parts.append(part)
        return dataclasses.replace(manifest, sources=tuple(sources), parts=tuple(parts))
