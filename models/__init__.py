"""Model side of CellScope: compute devices now; the model registry and adapters build on it."""
