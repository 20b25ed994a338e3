"""A dependency the SDK copies next to the entry point (MXNet(dependencies=[...]))."""


def greeting():
    return "hello from a dependency"
