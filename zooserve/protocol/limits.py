"""What a request may hold, in one place: every frontend checks these at the edge, before a
request reaches a model, so a client's mistake is answered INVALID_ARGUMENT (HTTP 400) or
NOT_FOUND (404), never an internal error. README's "Limits" section states them.

Plain constants: `zooserve.repository.layout` (read by training too) imports this without numpy."""

from __future__ import annotations

# A version is ASCII digits without a leading zero, at most this many: it fits the protocol's
# int64 with room to spare (Triton's rule for version folders, applied to requests too).
VERSION_MAX_DIGITS = 18

# Axes of one tensor. numpy stops at 64; no model zooserve serves comes near this.
MAX_RANK = 32
# Elements of one tensor (the product of its shape): 1 GiB of FP32. Each dimension must fit
# too, so no product or byte count is ever computed from an absurd shape.
MAX_ELEMENTS = 1 << 28

# A request's `id` is echoed in its response; longer ones are refused.
MAX_ID_LENGTH = 1024

# Characters of a client-supplied string (model name, version, tensor name, id) that an error
# message or a log line quotes; the rest is cut, with its length said.
MAX_ECHO = 64
