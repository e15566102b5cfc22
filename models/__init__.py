"""Model side of CellScope: devices, weights, the registry and one module per family.

Importing the package registers every family and its models: a new family is one module that
calls ``register_family`` (and ``register_model``) plus one line here.
"""

from models import (  # noqa: F401  (each module registers its models)
    autoencoder,
    cellpose_sam,
    classical,
    classifier,
    cnn_features,
    instanseg,
    morphology,
    rcnn,
    rcnn_training,
    sam,
    ultralytics_sam,
    unet,
    yolo,
    yolo_training,
)
