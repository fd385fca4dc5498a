"""Talking to one ComfyUI server: HTTP + websocket client, typed events, errors, node catalogue."""
