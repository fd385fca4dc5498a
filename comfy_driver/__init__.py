"""comfy-drive: drive a ComfyUI server as a production line for short AI videos."""

__version__ = "0.1.0"
