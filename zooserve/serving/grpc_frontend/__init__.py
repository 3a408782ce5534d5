"""The gRPC frontend: the Open Inference Protocol v2 as Triton speaks it, plus the standard
health and reflection services. It translates messages to DataPlane calls and back."""
