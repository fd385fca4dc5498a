"""File formats (series.yaml, workflow parameters, models.lock), loaded with file:line errors."""
