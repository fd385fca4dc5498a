"""A simulated ComfyUI server (aiohttp) that speaks the real protocol, for tests and dry runs."""
