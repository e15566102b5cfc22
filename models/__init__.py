"""Model side of CellScope: devices, weights, the registry and one adapter module per family.

Importing the package registers every family's models.
"""

from models import (  # noqa: F401  (each module registers its models)
    autoencoder,
    classical,
    classifier,
    cnn_features,
    morphology,
    rcnn,
    rcnn_training,
    sam,
    unet,
    yolo,
)
