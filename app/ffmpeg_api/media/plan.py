"""Turn validated operations into ffmpeg command lines (`Step`s) writing into `work_dir`.

Pure: nothing is executed here. Every argv is built from validated numbers/enums and
paths the caller controls; client media is always opened with the protocol/format
whitelist placed before its `-i`, as a `file:` URL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ffmpeg_api.errors import InputRejected, ValidationError
from ffmpeg_api.media import spec
from ffmpeg_api.media.probe import MediaInfo, decoder_guard_args, file_url, whitelist_args

#: Output options common to every ffmpeg command (after the binary).
COMMON_ARGS = ["-hide_banner", "-nostdin", "-y", "-nostats", "-progress", "pipe:1"]
# info, not warning: a job's log should show what ffmpeg did (stream mapping, encoder
# settings and statistics), not only what went wrong.
LOGLEVEL_ARGS = ["-loglevel", "level+info"]
ANALYZE_LOGLEVEL_ARGS = ["-loglevel", "level+info"]

# nvenc presets p1 (fastest) .. p7 (slowest) for the x264-style names
_NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p1",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p3",
    "medium": "p4",
    "slow": "p5",
    "slower": "p6",
    "veryslow": "p7",
}
DEFAULT_CRF = {"h264": 23, "h265": 28, "vp9": 31, "av1": 35}
DEFAULT_PRESET = {"h264": "medium", "h265": "medium", "vp9": "good", "av1": "8"}

# What a step costs, in "reference seconds": seconds of 1080p30 video encoded. Job timeouts
# are counted in them (jobs.step_timeout), so a 240p output, a trimmed window or a thumbnail
# gets the time its own work needs, not the input's claimed duration.
REFERENCE_PIXEL_RATE = 1920 * 1080 * 30
#: A decoded pixel costs about an eighth of an encoded one (x264 medium vs. h264 decoding).
DECODE_SHARE = 1 / 8
#: One second of audio encoded, against one second of 1080p30 video.
AUDIO_WEIGHT = 0.02
#: Muxing, demuxing and seeking: no step's second weighs less than this.
MIN_WEIGHT = 0.01
#: Frame rate assumed for a video stream whose rate the probe could not read.
ASSUMED_FPS = 30.0


@dataclass
class Step:
    name: str  # "transcode", "thumbnail", "hls", "extract_audio", "analyze"
    argv: list[str]  # full command incl. the ffmpeg binary; empty for metadata-only analyze
    outputs: list[str]  # file names relative to work_dir
    duration: float  # seconds of media this step processes (progress fraction base)
    primary: bool = False
    weight: float | None = None  # relative share of the job's progress (default: duration)
    work_dir: str = ""
    analyze: dict | None = None  # analyze steps: {"metadata", "metrics", "input_path", ...}
    encoded_outputs: int = 0  # outputs this step encodes for `duration` (HLS: one per rung)
    pixel_rate: float = 0.0  # pixels per second encoded (or compared), all outputs together
    decoded_pixel_rate: float = 0.0  # pixels per second of input decoded
    audio: bool = False  # encodes an audio stream

    @property
    def progress_weight(self) -> float:
        w = self.duration if self.weight is None else self.weight
        return max(float(w or 0.0), 0.05)

    @property
    def work(self) -> float:
        """What this step costs, in seconds of 1080p30 video encoded (`REFERENCE_PIXEL_RATE`)."""
        rate = (self.pixel_rate + DECODE_SHARE * self.decoded_pixel_rate) / REFERENCE_PIXEL_RATE
        weight = max(MIN_WEIGHT, rate + (AUDIO_WEIGHT if self.audio else 0.0))
        return max(0.0, float(self.duration or 0.0)) * weight

    @property
    def output_seconds(self) -> float:
        """Seconds of media this step encodes, once per output (what quotas count)."""
        return max(0.0, float(self.duration or 0.0)) * self.encoded_outputs


def output_seconds(steps: Sequence[Step]) -> float:
    """Encoded output-seconds of a plan: each encoding step's duration times its outputs."""
    return sum(step.output_seconds for step in steps)


def input_fps(info: MediaInfo) -> float:
    """The input's frame rate as the plan counts it (what an output keeps when no fps is set)."""
    return float(info.fps) if info.fps else ASSUMED_FPS


def input_pixel_rate(info: MediaInfo) -> float:
    return float(info.pixels) * input_fps(info) if info.has_video else 0.0


def _num(value: float) -> str:
    """A float for an ffmpeg argument: fixed-point, no exponent, trailing zeros removed."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _ffmpeg_head(ffmpeg_bin: str, *, analyze: bool = False) -> list[str]:
    return [ffmpeg_bin, *COMMON_ARGS, *(ANALYZE_LOGLEVEL_ARGS if analyze else LOGLEVEL_ARGS)]


def _input_args(
    input_path: str,
    *,
    start: float | None = None,
    length: float | None = None,
    max_pixels: int = 0,
):
    # -max_pixels: the decoder refuses any later picture larger than the probed limit.
    args = [*whitelist_args(), *decoder_guard_args(max_pixels)]
    if start:
        args += ["-ss", _num(start)]
    if length is not None:
        args += ["-t", _num(length)]
    return [*args, "-i", file_url(input_path)]


def _threads(threads: int) -> list[str]:
    return ["-threads", str(int(threads))] if threads and threads > 0 else []


def _out(work_dir: str, name: str) -> str:
    return file_url(os.path.join(work_dir, name))


def _video_encoder(codec: str, encoder: str, gpu_encoders: Sequence[str] | None) -> str:
    cpu, gpu = spec.VIDEO_ENCODERS[codec]
    if encoder == "gpu" and gpu and (gpu_encoders is None or gpu in gpu_encoders):
        return gpu
    return cpu


def video_codec_args(
    codec: str,
    *,
    encoder: str,
    crf: int | None,
    bitrate: int | None,
    preset: str | None,
    gpu_device: str = "0",
    gpu_encoders: Sequence[str] | None = None,
    threads: int = 0,
) -> list[str]:
    """-c:v and its rate-control/preset options for one video codec."""
    enc = _video_encoder(codec, encoder, gpu_encoders)
    args = ["-c:v", enc]
    preset = preset or DEFAULT_PRESET[codec]
    if enc.endswith("_nvenc"):
        args += ["-gpu", str(int(gpu_device))]
        if codec == "av1":
            # svt-av1 numeric preset 0 (slow) .. 13 (fast) -> p7 .. p1
            level = 7 - round(int(preset) * 6 / 13) if preset.isdigit() else 4
            args += ["-preset", f"p{level}"]
        else:
            args += ["-preset", _NVENC_PRESETS.get(preset, "p4")]
        if bitrate is not None:
            args += ["-rc", "vbr", "-b:v", spec.format_bitrate(bitrate)]
        else:
            q = DEFAULT_CRF[codec] if crf is None else crf
            if codec == "av1":
                q = round(q * 51 / 63)
            args += ["-rc", "vbr", "-cq", str(max(1, min(51, q))), "-b:v", "0"]
        return args
    if codec in ("h264", "h265"):
        args += ["-preset", preset]
    elif codec == "vp9":
        args += ["-deadline", preset, "-row-mt", "1"]
        if preset == "realtime":
            args += ["-cpu-used", "8"]
    else:  # av1 / svt-av1
        args += ["-preset", preset]
    if bitrate is not None:
        args += ["-b:v", spec.format_bitrate(bitrate)]
    else:
        args += ["-crf", str(DEFAULT_CRF[codec] if crf is None else crf)]
        if codec == "vp9":
            args += ["-b:v", "0"]
    if codec == "h265":  # x265 logs through its own logger: keep stderr to warnings
        params = "log-level=warning"
        if threads and threads > 0:
            params += f":pools={int(threads)}"
        args += ["-x265-params", params]
    return args


def _scale_filter(width: int | None, height: int | None) -> str | None:
    if width and height:
        return f"scale={width}:{height}:flags=bicubic,setsar=1"
    if width:
        return f"scale={width}:-2:flags=bicubic"
    if height:
        return f"scale=-2:{height}:flags=bicubic"
    return None


def _output_dims(info: MediaInfo, width: int | None, height: int | None) -> tuple[int, int]:
    iw, ih = info.width or 0, info.height or 0
    if width and height:
        return width, height
    if width and iw and ih:
        return width, max(2, round(width * ih / iw / 2) * 2)
    if height and iw and ih:
        return max(2, round(height * iw / ih / 2) * 2), height
    return iw, ih


def _audio_encoder_args(codec: str, bitrate: int | None) -> list[str]:
    if codec == "none":
        return ["-an"]
    if codec == "copy":
        return ["-c:a", "copy"]
    args = ["-c:a", spec.AUDIO_CODECS[codec] or "aac"]
    if bitrate is not None:
        args += ["-b:a", spec.format_bitrate(bitrate)]
    if codec == "opus":
        args += ["-ar", "48000"]
    return args


def _video_duration(info: MediaInfo) -> float:
    """Duration of the first video stream (may be shorter than the container's)."""
    for s in info.raw.get("streams") or []:
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic"):
            try:
                value = float(s.get("duration"))
            except (TypeError, ValueError):
                break
            if 0 < value < float("inf"):
                return min(value, info.duration) if info.duration else value
            break
    return info.duration


def _find(operations, cls):
    return next((op for op in operations if isinstance(op, cls)), None)


def build_plan(
    *,
    input_path: str,
    info: MediaInfo,
    operations: Sequence[spec.Operation],
    output_format: str,
    work_dir: str,
    encoder: str = "cpu",
    ffmpeg_bin: str = "ffmpeg",
    threads: int = 0,
    reference_path: str | None = None,
    gpu_device: str = "0",
    gpu_encoders: Sequence[str] | None = None,
    max_output_pixels: int = 0,
    max_output_pixel_rate: int = 0,
    max_input_pixels: int = 0,
) -> list[Step]:
    """ffmpeg steps producing every requested output inside `work_dir`.

    `encoder="gpu"` maps h264/h265/av1 to NVENC (vp9 stays on CPU); `gpu_encoders`, if
    given, lists the NVENC encoders known to work (others fall back to CPU).
    `max_output_pixel_rate` caps width x height x fps of every video output (the input's fps
    when the request sets none); `max_input_pixels` becomes every decoder's `-max_pixels`.
    Raises `ValidationError`/`InputRejected` when the request doesn't fit this input.
    """
    if encoder not in ("cpu", "gpu"):
        raise ValueError(f"encoder must be 'cpu' or 'gpu', not {encoder!r}")
    if not str(gpu_device).isdigit():
        raise ValueError("gpu_device must be a device index")
    fmt = spec.normalize_output_format(output_format)
    ctx = _Ctx(
        input_path=input_path,
        info=info,
        work_dir=os.path.abspath(work_dir),
        encoder=encoder,
        ffmpeg_bin=ffmpeg_bin,
        threads=threads,
        gpu_device=str(gpu_device),
        gpu_encoders=tuple(gpu_encoders) if gpu_encoders is not None else None,
        max_output_pixels=max_output_pixels,
        max_output_pixel_rate=max_output_pixel_rate,
        max_input_pixels=max_input_pixels,
    )
    index = {op.type: i for i, op in enumerate(operations)}
    transcode = _find(operations, spec.Transcode)
    trim = _find(operations, spec.Trim)
    hls = _find(operations, spec.Hls)
    steps: list[Step] = []

    window = (0.0, None)
    if trim is not None:
        window = trim.window(info.duration)
        if info.duration and trim.start >= info.duration:
            raise ValidationError(
                f"trim start {trim.start:g} s is beyond the input's duration "
                f"({info.duration:.3f} s)",
                field=f"operations[{index['trim']}].start",
            )

    if fmt in spec.VIDEO_CONTAINERS | spec.AUDIO_CONTAINERS and (transcode or trim):
        if transcode is None:
            transcode = spec.Transcode(
                video_codec=None if fmt in spec.AUDIO_CONTAINERS else spec.CONTAINER_VIDEO[fmt][0],
                audio_codec=spec.CONTAINER_AUDIO[fmt][0],
            )
        steps.append(ctx.transcode_step(transcode, fmt, window, index.get("transcode", 0)))
    if hls is not None:
        primary = fmt == "m3u8"
        steps.append(ctx.hls_step(hls, window if primary else (0.0, None), primary, index["hls"]))
    thumb = _find(operations, spec.Thumbnail)
    if thumb is not None:
        steps += ctx.thumbnail_steps(thumb, fmt in spec.IMAGE_FORMATS, index["thumbnail"])
    extract = _find(operations, spec.ExtractAudio)
    if extract is not None:
        steps.append(ctx.extract_audio_step(extract))
    analyze = _find(operations, spec.Analyze)
    if analyze is not None:
        steps.append(ctx.analyze_step(analyze, reference_path, index["analyze"]))
    return steps


def primary_output(steps: Sequence[Step]) -> str | None:
    """Relative name of the job's primary output file, or None."""
    for step in steps:
        if step.primary and step.outputs:
            return step.outputs[0]
    return None


@dataclass
class _Ctx:
    input_path: str
    info: MediaInfo
    work_dir: str
    encoder: str
    ffmpeg_bin: str
    threads: int
    gpu_device: str
    gpu_encoders: tuple[str, ...] | None
    max_output_pixels: int
    max_output_pixel_rate: int = 0
    max_input_pixels: int = 0

    def _inputs(self, *, start: float | None = None, length: float | None = None) -> list[str]:
        return _input_args(
            self.input_path, start=start, length=length, max_pixels=self.max_input_pixels
        )

    def _check_output_rate(self, w: int, h: int, fps: float, fieldname: str) -> float:
        """Pixels per second of one video output; over the limit is a 422 naming `fieldname`."""
        rate = float(w) * float(h) * float(fps)
        if self.max_output_pixel_rate and rate > self.max_output_pixel_rate:
            raise ValidationError(
                f"output {w}x{h} at {fps:g} fps is {rate:.0f} pixels per second; the limit is "
                f"{self.max_output_pixel_rate} (lower the frame size or the fps)",
                field=fieldname,
            )
        return rate

    def _check_output_pixels(self, width, height, fieldname: str) -> None:
        w, h = _output_dims(self.info, width, height)
        if self.max_output_pixels and w * h > self.max_output_pixels:
            raise ValidationError(
                f"output frame {w}x{h} exceeds the limit of {self.max_output_pixels} pixels",
                field=fieldname,
            )

    def _vcodec(self, codec, **kw) -> list[str]:
        return video_codec_args(
            codec,
            encoder=self.encoder,
            gpu_device=self.gpu_device,
            gpu_encoders=self.gpu_encoders,
            threads=self.threads,
            **kw,
        )

    def transcode_step(self, op: spec.Transcode, fmt: str, window, idx: int) -> Step:
        info = self.info
        start, length = window
        audio_only = fmt in spec.AUDIO_CONTAINERS
        if audio_only and not info.has_audio:
            raise InputRejected("input has no audio stream")
        if not audio_only and not info.has_video and op.audio_codec == "none":
            raise InputRejected("input has no video stream and audio is disabled")
        name = f"output.{fmt}"
        argv = [*_ffmpeg_head(self.ffmpeg_bin), *self._inputs(start=start, length=length)]
        use_video = info.has_video and not audio_only
        use_audio = info.has_audio and op.audio_codec != "none"
        if use_video:
            argv += ["-map", "0:v:0"]
        if use_audio:
            argv += ["-map", "0:a:0"]
        pixel_rate = 0.0
        if use_video:
            self._check_output_pixels(op.width, op.height, f"operations[{idx}].width")
            w, h = _output_dims(info, op.width, op.height)
            fps = op.fps or input_fps(info)
            pixel_rate = self._check_output_rate(w, h, fps, f"operations[{idx}].fps")
            filters = []
            if op.fps:
                filters.append(f"fps={_num(op.fps)}")
            scale = _scale_filter(op.width, op.height)
            if scale:
                filters.append(scale)
            filters.append("format=yuv420p")
            argv += ["-vf", ",".join(filters)]
            argv += self._vcodec(
                op.video_codec or spec.CONTAINER_VIDEO[fmt][0],
                crf=op.crf,
                bitrate=op.video_bitrate,
                preset=op.preset,
            )
            if op.video_codec == "h265" and fmt in ("mp4", "mov"):
                argv += ["-tag:v", "hvc1"]
        else:
            argv += ["-vn"]
        if use_audio:
            argv += _audio_encoder_args(
                op.audio_codec or spec.CONTAINER_AUDIO[fmt][0], op.audio_bitrate
            )
        else:
            argv += ["-an"]
        argv += ["-sn", "-dn", *_threads(self.threads)]
        if fmt in ("mp4", "mov", "m4a"):
            argv += ["-movflags", "+faststart"]
        argv += ["-f", spec.OUTPUT_FORMATS[fmt], _out(self.work_dir, name)]
        duration = length if length is not None else max(0.0, info.duration - start)
        return Step(
            "transcode",
            argv,
            [name],
            duration,
            primary=True,
            work_dir=self.work_dir,
            encoded_outputs=1,
            pixel_rate=pixel_rate,
            decoded_pixel_rate=input_pixel_rate(info) if use_video else 0.0,
            audio=use_audio,
        )

    def hls_step(self, op: spec.Hls, window, primary: bool, idx: int) -> Step:
        info = self.info
        if not info.has_video:
            raise InputRejected("HLS needs an input with a video stream")
        start, length = window
        n = len(op.ladder)
        argv = [*_ffmpeg_head(self.ffmpeg_bin), *self._inputs(start=start, length=length)]
        chains = [f"[0:v]format=yuv420p,split={n}" + "".join(f"[s{i}]" for i in range(n))]
        pixel_rate = 0.0
        for i, r in enumerate(op.ladder):
            fieldname = f"operations[{idx}].ladder[{i}].height"
            self._check_output_pixels(None, r.height, fieldname)
            w, h = _output_dims(info, None, r.height)
            pixel_rate += self._check_output_rate(w, h, input_fps(info), fieldname)
            chains.append(f"[s{i}]scale=-2:{r.height}:flags=bicubic[v{i}]")
        argv += ["-filter_complex", ";".join(chains)]
        stream_map = []
        for i, _r in enumerate(op.ladder):
            argv += ["-map", f"[v{i}]"]
            if info.has_audio:
                argv += ["-map", "0:a:0"]
                stream_map.append(f"v:{i},a:{i}")
            else:
                stream_map.append(f"v:{i}")
        seg = _num(op.segment_duration)
        argv += self._vcodec(
            "h264", crf=None, bitrate=op.ladder[0].video_bitrate, preset="veryfast"
        )
        for i, r in enumerate(op.ladder):
            argv += [
                f"-b:v:{i}",
                spec.format_bitrate(r.video_bitrate),
                f"-maxrate:v:{i}",
                spec.format_bitrate(r.video_bitrate * 3 // 2),
                f"-bufsize:v:{i}",
                spec.format_bitrate(r.video_bitrate * 2),
            ]
        argv += ["-force_key_frames", f"expr:gte(t,n_forced*{seg})"]
        if argv[argv.index("-c:v") + 1] == "libx264":
            argv += ["-sc_threshold", "0"]
        else:
            argv += ["-forced-idr", "1"]
        if info.has_audio:
            argv += ["-c:a", "aac", "-ac", "2"]
            for i, r in enumerate(op.ladder):
                argv += [f"-b:a:{i}", spec.format_bitrate(r.audio_bitrate)]
        argv += ["-sn", "-dn", *_threads(self.threads)]
        argv += [
            "-f",
            "hls",
            "-hls_time",
            seg,
            "-hls_playlist_type",
            "vod",
            "-hls_flags",
            "independent_segments",
            "-hls_segment_type",
            "mpegts",
            "-hls_segment_filename",
            os.path.join(self.work_dir, "v%v", "seg_%05d.ts"),
            "-master_pl_name",
            "master.m3u8",
            "-var_stream_map",
            " ".join(stream_map),
            os.path.join(self.work_dir, "v%v", "index.m3u8"),
        ]
        outputs = ["master.m3u8", *(f"v{i}/index.m3u8" for i in range(n))]
        duration = length if length is not None else max(0.0, info.duration - start)
        return Step(
            "hls",
            argv,
            outputs,
            duration,
            primary=primary,
            work_dir=self.work_dir,
            encoded_outputs=n,
            pixel_rate=pixel_rate,
            decoded_pixel_rate=input_pixel_rate(info),
            audio=info.has_audio,
        )

    def thumbnail_steps(self, op: spec.Thumbnail, primary: bool, idx: int) -> list[Step]:
        info = self.info
        if not info.has_video:
            raise InputRejected("thumbnails need an input with a video stream")
        duration = 0.0 if info.is_image else info.duration
        times = op.times(duration)
        if op.at is not None and not info.is_image:
            for j, t in enumerate(times):
                if info.duration and t >= info.duration:
                    raise ValidationError(
                        f"{t:g} s is beyond the input's duration ({info.duration:.3f} s)",
                        field=f"operations[{idx}].at[{j}]",
                    )
        if op.width:
            self._check_output_pixels(op.width, None, f"operations[{idx}].width")
        frame = 1.0 / info.fps if info.fps else 0.04
        # a seek past the last frame's timestamp yields no picture: stay 1.5 frames before it
        latest = max(0.0, _video_duration(info) - 1.5 * frame)
        steps = []
        for k, t in enumerate(times, start=1):
            name = f"thumb_{k:03d}.{op.format}"
            start = None if info.is_image else round(min(t, latest), 3)
            argv = [*_ffmpeg_head(self.ffmpeg_bin), *self._inputs(start=start)]
            filters = [f"scale={op.width}:-2:flags=bicubic"] if op.width else []
            if op.format == "jpg":
                filters.append("format=yuvj420p")
                codec = ["-c:v", "mjpeg", "-q:v", "3"]
            else:
                filters.append("format=rgb24")
                codec = ["-c:v", "png"]
            argv += ["-map", "0:v:0", "-frames:v", "1", "-vf", ",".join(filters), *codec]
            argv += ["-an", "-sn", "-dn", "-update", "1", "-f", "image2"]
            argv += [_out(self.work_dir, name)]
            steps.append(
                Step(
                    "thumbnail",
                    argv,
                    [name],
                    frame,
                    primary=primary and k == 1,
                    weight=0.5,
                    work_dir=self.work_dir,
                )
            )
        return steps

    def extract_audio_step(self, op: spec.ExtractAudio) -> Step:
        info = self.info
        if not info.has_audio:
            raise InputRejected("input has no audio stream to extract")
        enc, muxer, ext, _ = spec.EXTRACT_AUDIO_CODECS[op.codec]
        name = f"audio.{ext}"
        argv = [*_ffmpeg_head(self.ffmpeg_bin), *self._inputs()]
        argv += ["-map", "0:a:0", "-vn", "-sn", "-dn", "-c:a", enc]
        if op.bitrate is not None:
            argv += ["-b:a", spec.format_bitrate(op.bitrate)]
        if op.codec == "opus":
            argv += ["-ar", "48000"]
        argv += [*_threads(self.threads)]
        if muxer == "ipod":
            argv += ["-movflags", "+faststart"]
        argv += ["-f", muxer, _out(self.work_dir, name)]
        return Step(
            "extract_audio",
            argv,
            [name],
            info.duration,
            work_dir=self.work_dir,
            encoded_outputs=1,
            audio=True,
        )

    def analyze_step(self, op: spec.Analyze, reference_path: str | None, idx: int) -> Step:
        info = self.info
        details = {
            "metadata": op.metadata,
            "metrics": list(op.metrics),
            "input_path": self.input_path,
            "reference_path": reference_path,
        }
        argv: list[str] = []
        if op.metrics:
            if not reference_path:
                raise ValidationError(
                    "metrics need a resolved reference file", field=f"operations[{idx}].reference"
                )
            if not info.has_video or not info.width or not info.height:
                raise InputRejected("quality metrics need an input with a video stream")
            argv = analyze_argv(
                self.ffmpeg_bin,
                self.input_path,
                reference_path,
                width=info.width,
                height=info.height,
                metrics=op.metrics,
                threads=self.threads,
                max_input_pixels=self.max_input_pixels,
            )
        details["max_input_pixels"] = self.max_input_pixels
        # metrics decode the input and the reference (scaled to the input's size) and compare
        rate = input_pixel_rate(info) if argv else 0.0
        return Step(
            "analyze",
            argv,
            ["analysis.json"],
            info.duration if argv else 0.0,
            weight=None if argv else 0.1,
            work_dir=self.work_dir,
            analyze=details,
            pixel_rate=rate,
            decoded_pixel_rate=2 * rate,
        )


def analyze_argv(
    ffmpeg_bin: str,
    input_path: str,
    reference_path: str,
    *,
    width: int,
    height: int,
    metrics: Sequence[str],
    threads: int = 0,
    max_input_pixels: int = 0,
) -> list[str]:
    """Compare input (main) against reference (scaled to the input's size) with psnr/ssim."""
    metrics = [m for m in spec.METRICS if m in metrics]
    n = len(metrics)
    if not n:
        raise ValueError("no metrics requested")
    w, h = int(width), int(height)
    split_r = f"split={n}" + "".join(f"[r{i}]" for i in range(n))
    split_m = f"split={n}" + "".join(f"[m{i}]" for i in range(n))
    graph = [
        f"[0:v]format=yuv420p,setpts=PTS-STARTPTS,{split_m}",
        f"[1:v]scale={w}:{h}:flags=bicubic,setsar=1,format=yuv420p,setpts=PTS-STARTPTS,{split_r}",
    ]
    graph += [f"[m{i}][r{i}]{m}[o{i}]" for i, m in enumerate(metrics)]
    argv = [*_ffmpeg_head(ffmpeg_bin, analyze=True)]
    guard = decoder_guard_args(max_input_pixels)
    argv += [*whitelist_args(), *guard, "-i", file_url(input_path)]
    argv += [*whitelist_args(), *guard, "-i", file_url(reference_path)]
    argv += ["-filter_complex", ";".join(graph), *_threads(threads)]
    for i in range(n):
        argv += ["-map", f"[o{i}]", "-f", "null", "-"]
    return argv
