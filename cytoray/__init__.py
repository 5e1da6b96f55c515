"""cytoray: distributed hyperparameter studies for synthetic cytology/histology images."""

__version__ = "0.1.0"
