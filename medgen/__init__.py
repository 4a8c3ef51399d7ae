"""medgen: 3D medical generative models on MONAI."""

__version__ = "0.1.0"
