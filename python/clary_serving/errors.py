"""Errors that carry the HTTP status the model server answers with."""


class InferenceError(Exception):
    status = 500

    def __init__(self, message, status=None):
        super().__init__(message)
        if status is not None:
            self.status = status


class UnsupportedContentType(InferenceError):
    status = 415


class UnsupportedAccept(InferenceError):
    status = 406


class BadRequest(InferenceError):
    status = 400
