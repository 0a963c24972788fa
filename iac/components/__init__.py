"""Pulumi ComponentResources, one per module."""
