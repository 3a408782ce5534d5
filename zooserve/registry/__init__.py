"""Sharing repository versions through an OCI registry: `zooserve push` and `zooserve pull`
(an artifact per version, no Docker needed) and the labels a model-only image carries."""
