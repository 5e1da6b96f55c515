"""MLflow pyfunc wrapper of a classifier bundle: predict(images uint8 [N,H,W,3]) → probabilities."""

from __future__ import annotations

import mlflow.pyfunc


class ClassifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from .bundle import load_classifier_bundle

        self.model, self.meta = load_classifier_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        import numpy as np

        from .bundle import predict_images

        return predict_images(self.model, self.meta, np.asarray(model_input, dtype=np.uint8))
