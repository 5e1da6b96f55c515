"""A registered cytoray generator as an MLflow pyfunc (models-from-code: no pickled object).

predict(rows of {"n", "cls", "seed"}) → a list of uint8 image arrays sampled from the bundle.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class GeneratorBundleModel(PythonModel):
    def load_context(self, context):
        from cytoray.generators import load_bundle

        self.gen = load_bundle(context.artifacts["bundle"])

    # The hint is what pyfunc passes; it also tells MLflow
    # there is no schema to infer (no warning at logging).
    def predict(self, context, model_input: pd.DataFrame, params=None):
        import numpy as np

        rows = (
            model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        )
        return [
            np.asarray(self.gen.sample(int(r["n"]), str(r["cls"]), seed=int(r.get("seed", 0)))[0])
            for r in rows
        ]


mlflow.models.set_model(GeneratorBundleModel())
