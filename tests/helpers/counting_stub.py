"""A gRPC stub wrapper that records the RPCs made through it, for tests of how many a client
makes."""

from __future__ import annotations


class CountingStub:
    """The client's stub, counting the RPCs that go through it."""

    def __init__(self, stub) -> None:
        self.stub, self.calls = stub, []

    def __getattr__(self, method):
        self.calls.append(method)
        return getattr(self.stub, method)
