"""STA-V2A Foley server: the STA-V2A model, its pipeline, CLIs, training and metrics."""

__version__ = "0.1.0"
