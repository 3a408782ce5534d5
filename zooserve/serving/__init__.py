"""zooserve's serving side: a protocol-free core (repository, loaded models, validation,
statistics) and frontends that translate one wire protocol each (gRPC, BentoML HTTP).

Nothing here imports TensorFlow, Keras or the `training` package."""

__version__ = "0.1.0"
