"""ViLocal: video inpainting localization (3D SRM residual -> 3D UniFormer -> conv decoder)."""
