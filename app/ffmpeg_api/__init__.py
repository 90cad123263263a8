"""FFmpeg API: a self-hosted FFmpeg transcoding service."""

__version__ = "0.1.0"
