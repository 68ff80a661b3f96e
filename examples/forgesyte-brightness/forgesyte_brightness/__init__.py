"""An example third-party ForgeSyte plugin: mean brightness of sampled frames.

It shows the whole plugin surface: options with defaults, progress, a CSV
artifact recorded by relative key, a readable PluginError, and the logger.
"""

from __future__ import annotations

import csv

import av

from forgesyte.plugins.base import Plugin, PluginError


class BrightnessPlugin(Plugin):
    name = "brightness"
    version = "1.0.0"
    description = "Mean brightness (0-255) of every Nth frame, with a CSV of the samples."
    defaults = {"every": 5}

    def run(self, video, ctx):
        every = int(ctx.options["every"])
        if every < 1:
            raise PluginError("Option 'every' must be at least 1.")
        path, key = ctx.artifact("brightness.csv")
        samples = []
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            total = stream.frames or 0
            for index, frame in enumerate(container.decode(stream)):
                if index % every == 0:
                    luma = frame.to_ndarray(format="gray")
                    samples.append((round(float(frame.time or 0), 3), round(float(luma.mean()), 2)))
                if total and index % 25 == 0:
                    ctx.progress(index / total)
        if not samples:
            raise PluginError("No frame could be decoded.")
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["time_s", "brightness"])
            writer.writerows(samples)
        ctx.log.info("%d samples written to %s", len(samples), key)
        values = [b for _, b in samples]
        return {"mean": round(sum(values) / len(values), 2), "min": min(values), "max": max(values),
                "samples": len(samples), "csv": key}
