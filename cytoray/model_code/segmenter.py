"""A registered nucleus segmenter as an MLflow pyfunc (models-from-code: no pickled object).

predict(uint8 images [N,H,W,3] at their native resolution) → uint8 0/1 nucleus masks [N,H,W],
each image resized by the segmenter's working scale as `cytoray segment` does;
params={"output": "probability"} gives float32 nucleus probabilities [N,H,W] instead.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class SegmenterBundleModel(PythonModel):
    def load_context(self, context):
        from cytoray.masks.nucleus_net import load_segmenter

        self.seg = load_segmenter(context.artifacts["bundle"])

    # An image array has no MLflow schema: the hint says so (no warning at logging).
    def predict(self, context, model_input: np.ndarray, params=None):
        return self.seg.predict(model_input, (params or {}).get("output", "mask"))


mlflow.models.set_model(SegmenterBundleModel())
