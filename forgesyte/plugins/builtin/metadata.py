"""`metadata`: container and stream facts, as FFmpeg (through PyAV) reports them.

Also the gate for "is this a decodable video at all": it decodes the first
video frame, so a renamed text file or a truncated header fails the job with
one readable sentence instead of producing an empty report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgesyte.plugins.base import Context, Plugin, PluginError
from forgesyte.plugins.builtin._video import decode, open_video


def _ratio(value) -> float | None:
    return round(float(value), 6) if value else None


class MetadataPlugin(Plugin):
    name = "metadata"
    version = "1.0"
    description = "Container format, duration, size; video codec, frame size, fps, frame count; audio."
    cost = 0.02  # opens the file and decodes one frame

    def run(self, video: Path, ctx: Context) -> dict[str, Any]:
        container, vstream = open_video(video, threaded=False)
        with container:
            report = self._report(video, container, vstream)
            ctx.progress(0.5)
            first = self._first_frame(container, vstream)
            rotation = int(getattr(first, "rotation", 0) or 0)
            if rotation:
                report["video"]["rotation"] = rotation
        ctx.progress(1.0)
        return report

    def _report(self, video: Path, container, vstream) -> dict[str, Any]:
        cc = vstream.codec_context
        duration_s = container.duration / 1_000_000 if container.duration is not None else None
        stream_duration = (
            float(vstream.duration * vstream.time_base)
            if vstream.duration is not None and vstream.time_base
            else duration_s
        )
        fps = _ratio(vstream.average_rate) or _ratio(vstream.guessed_rate)
        video_info: dict[str, Any] = {
            "codec": cc.name,
            "width": cc.width,
            "height": cc.height,
            "fps": fps,
            "frames": vstream.frames or None,
            "pix_fmt": cc.pix_fmt,
        }
        if not vstream.frames and fps and stream_duration:
            video_info["frames"] = round(stream_duration * fps)
            video_info["frames_estimated"] = True
        sar = vstream.sample_aspect_ratio
        if sar and sar != 1:
            video_info["sample_aspect_ratio"] = f"{sar.numerator}:{sar.denominator}"

        audio = None
        if container.streams.audio:
            acc = container.streams.audio[0].codec_context
            audio = {
                "codec": acc.name,
                "sample_rate": acc.sample_rate,
                "channels": acc.layout.nb_channels if acc.layout else None,
            }
        return {
            "format": container.format.name,
            "duration_s": duration_s,
            "size_bytes": video.stat().st_size,
            "bit_rate": container.bit_rate or None,
            "video": video_info,
            "audio": audio,
        }

    @staticmethod
    def _first_frame(container, vstream):
        for frame in decode(container, vstream):
            return frame
        raise PluginError("The video stream holds no decodable frame.")

