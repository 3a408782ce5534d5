"""Training for the zooserve model zoo: data -> Keras model -> ONNX + card in models/.

Read it in the lesson's order: `datasets` (prepare data), `architectures` (build),
`fitting` (compile, fit, evaluate), `export` (ONNX, parity, card), `plots`, `ledger`;
`registry` ties a data loader and an architecture into a model, `pipeline` runs one.
"""
