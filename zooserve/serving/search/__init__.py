"""Spectral library search served as a model: a library bundle (embeddings of reference
spectra, their metadata and a manifest) beside the models, the backends that find the
nearest library entries to a query's embedding, and the model the repository serves for it.
See docs/search.md."""
