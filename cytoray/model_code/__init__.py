"""MLflow models-from-code files for registered cytoray models.

`registry.register` logs one of these files as the pyfunc's code: loading a registered model
executes the file (it imports cytoray and calls `mlflow.models.set_model`), so nothing is ever
unpickled. cytoray itself never imports them.
"""
