"""Model components of STA-V2A (config-sized: the tiny test model and the real one share classes)."""

from v2a_server.models.cavp import CAVPVideoEncoder
from v2a_server.models.conditioner import STAVideoConditioner, VideoConditioning
from v2a_server.models.controlnet import STAControlNetModel

__all__ = ["CAVPVideoEncoder", "STAControlNetModel", "STAVideoConditioner", "VideoConditioning"]
