"""The three MobilePicasso stages: edit (standard resolution), projection (latent), upscale (tiled)."""
