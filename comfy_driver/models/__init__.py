"""Model files: models.lock and where each kind of file lives in a ComfyUI models tree."""
