"""Local `evaluate` metric scripts, so that metrics never need the Hugging Face Hub.

`evaluate.load("accuracy")` downloads `evaluate-metric/accuracy` from the Hub; these folders hold
scripts in the same standard format (an `evaluate.Metric` subclass with `_info()` and `_compute()`,
computed by scikit-learn), loaded from their path by `training.metrics.load_metric` or by
`evaluate.load(str(folder))`. Each `<name>/<name>.py` is a self-contained script: evaluate copies
it into its module cache and imports it from there, so it must not import `training` or `classifr`.

The `__init__.py` files only make setuptools ship the scripts in a wheel; nothing imports them.
"""
