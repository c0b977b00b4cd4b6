"""The project's own model classes (diffusers `ModelMixin`s): projector, one-step SR U-Net, artifact detector,
edit-region model, look model.

Bundled weights live in `pipeline/models/<set>/`, one diffusers-style subfolder per component.
"""
from pipeline.models.artifact_detector import ArtifactDetector
from pipeline.models.edit_region import EditRegionModel
from pipeline.models.latent_projector import LatentProjector
from pipeline.models.look import LookModel
from pipeline.models.sr_unet import LatentSRUNet

__all__ = ["ArtifactDetector", "EditRegionModel", "LatentProjector", "LatentSRUNet", "LookModel"]
