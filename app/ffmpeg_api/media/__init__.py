"""Media processing: request validation, probing, command planning and running ffmpeg.

* `spec`    -- validates a client's `output` + `operations` into frozen dataclasses.
* `probe`   -- ffprobe with a protocol/format whitelist; limits on input media.
* `plan`    -- turns validated operations into ffmpeg argv lists (`Step`s).
* `runner`  -- runs steps with progress, cancellation, timeouts and bounded stderr.
* `gpu`     -- decides whether NVENC works by opening the encoders for real.
* `analyze` -- metadata and PSNR/SSIM analysis, written to `analysis.json`.

No string supplied by a client ever reaches an ffmpeg command line: every value that does
is a validated number or a member of a fixed enumeration, and every filter graph is built
here from those values.
"""
