"""ForgeSyte: a watch-folder video processing daemon."""

__version__ = "0.1.0"
