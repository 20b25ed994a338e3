"""Compatibility package for scripts written for AWS's MXNet training containers (Clary)."""
