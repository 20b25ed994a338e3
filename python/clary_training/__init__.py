"""Clary helpers that run training scripts (the legacy train() driver)."""
