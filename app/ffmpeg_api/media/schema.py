"""JSON Schemas (OpenAPI components) of the operations `spec.parse_request` accepts.

Documentation only: `spec` is the authority (it also checks cross-field rules such as
crf/video_bitrate exclusivity and codec/container compatibility). A test keeps the two in
step (same operation types and keys).
"""

from __future__ import annotations

from ffmpeg_api.media import spec

_BITRATE = {
    "oneOf": [
        {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,3})?[kKmM]?$"},
        {"type": "integer", "minimum": 1},
    ],
    "description": "Bits per second: '800k', '2M', '2.5M' or an integer.",
}
_TIME = {
    "oneOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^([0-9]{1,3}:)?[0-5]?[0-9]:[0-5]?[0-9](\.[0-9]{1,6})?$"},
    ],
    "description": "Seconds, or 'HH:MM:SS.mmm' / 'MM:SS'.",
}
_DIM = {
    "type": "integer",
    "minimum": spec.MIN_DIMENSION,
    "maximum": spec.MAX_DIMENSION,
    "multipleOf": 2,
}


def _op(name: str, props: dict, required: tuple[str, ...] = (), description: str = "") -> dict:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "required": ["type", *required],
        "properties": {"type": {"type": "string", "enum": [name]}, **props},
    }


OPERATION_SCHEMAS: dict[str, dict] = {
    "TranscodeOperation": _op(
        "transcode",
        {
            "video_codec": {
                "type": "string",
                "enum": list(spec.VIDEO_CODECS),
                "description": "Default: the container's first codec (mp4/mov/mkv: h264, "
                "webm: vp9). mp4: h264,h265,vp9,av1; mov: h264,h265; mkv: all; "
                "webm: vp9,av1. Not allowed for audio-only outputs.",
            },
            "crf": {
                "type": "integer",
                "minimum": 0,
                "maximum": 63,
                "description": "Constant quality; h264/h265 0-51 (default 23/28), vp9 0-63 "
                "(default 31), av1 1-63 (default 35). Exclusive with video_bitrate.",
            },
            "video_bitrate": _BITRATE,
            "preset": {
                "oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0, "maximum": 13}],
                "description": "h264/h265: ultrafast..veryslow (default medium); "
                "vp9: realtime|good|best (default good); av1: 0-13 (default 8).",
            },
            "width": _DIM,
            "height": _DIM,
            "fps": {"type": "number", "minimum": 1, "maximum": 120},
            "audio_codec": {
                "type": "string",
                "enum": list(spec.AUDIO_CODECS),
                "description": "Default: the container's first audio codec (mp4/mov/mkv/m4a/"
                "aac: aac, webm/ogg: opus, mp3: mp3, wav: pcm, flac: flac).",
            },
            "audio_bitrate": _BITRATE,
        },
        description="Re-encode into the primary output `output.<ext>`. Give width or height "
        "alone to keep the aspect ratio.",
    ),
    "TrimOperation": _op(
        "trim",
        {"start": {**_TIME, "default": 0}, "end": _TIME, "duration": _TIME},
        description="Cut the primary output to [start, end) or [start, start+duration); "
        "end and duration are exclusive; neither means to the end of the input.",
    ),
    "ThumbnailOperation": _op(
        "thumbnail",
        {
            "at": {"type": "array", "items": _TIME, "minItems": 1, "maxItems": 100},
            "count": {"type": "integer", "minimum": 1, "maximum": 100},
            "interval": {"type": "number", "minimum": 0.1},
            "width": _DIM,
            "format": {"type": "string", "enum": ["jpg", "png"], "default": "jpg"},
        },
        description="Exactly one of at / count (evenly spaced) / interval (at most 100 "
        "images). Files thumb_001.<format>, thumb_002...",
    ),
    "HlsOperation": _op(
        "hls",
        {
            "ladder": {
                "type": "array",
                "minItems": 1,
                "maxItems": spec.MAX_RENDITIONS,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["height", "video_bitrate"],
                    "properties": {
                        "height": _DIM,
                        "video_bitrate": _BITRATE,
                        "audio_bitrate": {**_BITRATE, "default": "128k"},
                    },
                },
            },
            "segment_duration": {"type": "number", "minimum": 2, "maximum": 10, "default": 6},
        },
        required=("ladder",),
        description="H.264/AAC HLS: master.m3u8, v<N>/index.m3u8, v<N>/seg_<NNNNN>.ts.",
    ),
    "ExtractAudioOperation": _op(
        "extract_audio",
        {
            "codec": {
                "type": "string",
                "enum": list(spec.EXTRACT_AUDIO_CODECS),
                "default": "aac",
                "description": "aac -> audio.m4a, mp3 -> audio.mp3, opus -> audio.opus, "
                "flac -> audio.flac, wav -> audio.wav.",
            },
            "bitrate": {**_BITRATE, "description": "Lossy codecs only."},
        },
    ),
    "AnalyzeOperation": _op(
        "analyze",
        {
            "metadata": {"type": "boolean", "default": True},
            "reference": {
                "type": "string",
                "description": "Path (inside the storage root) of the file to compare with.",
            },
            "metrics": {
                "type": "array",
                "items": {"type": "string", "enum": list(spec.METRICS)},
                "uniqueItems": True,
                "description": "Requires reference.",
            },
        },
        description="Writes analysis.json; also returned as the job's result.",
    ),
}
