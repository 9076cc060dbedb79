"""The STA-V2A diffusion pipeline."""

from v2a_server.pipelines.pipeline_sta_v2a import (
    GenerationCancelled,
    STAV2APipeline,
    STAV2APipelineOutput,
    StepProgress,
)

__all__ = ["GenerationCancelled", "STAV2APipeline", "STAV2APipelineOutput", "StepProgress"]
