"""What a client and the server share about the Open Inference Protocol v2: tensors to numpy
and back (codecs, grpc_tensors), datatypes, the limits every field is held to, the error
vocabulary, labelled outputs, TLS credentials, and the generated protobuf modules.

Nothing here imports the server (zooserve.serving) or training: `zooserve.Client` stands on
this package alone."""
