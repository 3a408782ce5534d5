"""The BentoML frontend: one `bentoml serve` process answering JSON over HTTP (BentoML APIs and
the KServe v2 REST paths) and the gRPC frontend, over one DataPlane.

Importing this package imports no BentoML; `zooserve.serving.bento_frontend.service` does."""
