"""The HTTP frontend: the KServe v2 REST paths (Open Inference Protocol over HTTP/JSON) that
`zooserve serve` answers on its HTTP port, and the JSON tensors and HTTP statuses that the
BentoML frontend shares."""
