"""Graphs: workflow files, templates with parameters addressed by node title."""
