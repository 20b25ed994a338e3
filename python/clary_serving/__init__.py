"""Clary's model-server worker: the SageMaker MXNet serving handler chain, run in a long-lived
Python process that the Rust front end feeds over a Unix socket."""
