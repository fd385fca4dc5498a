"""Publishing finished episodes to YouTube: auth, metadata, resumable upload, never twice."""
