"""A registered cytoray classifier as an MLflow pyfunc (models-from-code: no pickled object).

predict(uint8 images [N,H,W,3]) → class probabilities [N, C], preprocessing as in training.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class ClassifierBundleModel(PythonModel):
    def load_context(self, context):
        from cytoray.classify.bundle import load_classifier_bundle

        self.model, self.meta = load_classifier_bundle(context.artifacts["bundle"])

    # An image array has no MLflow schema: the hint says so (no warning at logging).
    def predict(self, context, model_input: np.ndarray, params=None):
        from cytoray.classify.bundle import predict_images

        return predict_images(self.model, self.meta, np.asarray(model_input, dtype=np.uint8))


mlflow.models.set_model(ClassifierBundleModel())
