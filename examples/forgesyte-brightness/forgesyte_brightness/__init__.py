"""An example third-party ForgeSyte plugin: mean brightness of sampled frames.

It shows the whole plugin surface: a frame plugin fed by the worker's shared
decoding pass (no decoding of its own), declared options, a CSV artifact
recorded by relative key, a readable PluginError, and the logger.
"""

from __future__ import annotations

import csv

from forgesyte.plugins.base import FramePlugin, Frames, Option, PluginError


class BrightnessPlugin(FramePlugin):
    name = "brightness"
    version = "1.1.0"
    description = "Mean brightness (0-255) of every Nth frame, with a CSV of the samples."
    options = {"every": Option(int, 5, "use every Nth frame", min=1)}
    cost = 0.05  # its own work, as a fraction of one decode of the video

    def wants(self, video, ctx):
        # Every frame, as small grey images scaled by FFmpeg. Frames it skips are never
        # converted (conversion happens when .array is read), so skipping is free.
        return Frames(width=160, format="gray")

    def analyze(self, video, frames, ctx):
        every = int(ctx.options["every"])
        samples = []
        for frame in frames:
            if frame.index % every == 0:
                samples.append((round(frame.time_s, 3), round(float(frame.array.mean()), 2)))
        if not samples:
            raise PluginError("No frame could be decoded.")
        path, key = ctx.artifact("brightness.csv")
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["time_s", "brightness"])
            writer.writerows(samples)
        ctx.log.info("%d samples written to %s", len(samples), key)
        values = [b for _, b in samples]
        return {"mean": round(sum(values) / len(values), 2), "min": min(values), "max": max(values),
                "samples": len(samples), "csv": key}
