"""Data: folder datasets, BreakHis naming, the embedded simulator, splits and leakage checks."""
