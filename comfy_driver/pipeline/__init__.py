"""The run: jobs, scheduling on one or several servers, downloads, episodes, report."""
