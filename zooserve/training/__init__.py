"""Training for the zooserve model zoo: data -> Keras model -> ONNX + card in models/.

Read it in the lesson's order: a recipe in `recipes/` (one per lesson model: data, model, fit
settings, baseline, the card's words) uses `data/` (the data sets), `fitting` (compile, fit,
evaluate) and `spec` (what a recipe declares); `pipeline` runs one recipe and ships it with
`export` (ONNX, parity), `plots` and `ledger`.
"""
