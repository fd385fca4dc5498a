"""Video files: probe, encode, concatenate."""
