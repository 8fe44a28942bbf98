"""morphable: learn, fit, evaluate and generate 3D face and head models."""

__version__ = "0.1.0"
