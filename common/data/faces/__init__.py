"""Face tools for FaceForensics++-style data: `detection` (face boxes: a bundled cascade detector, tracking,
cached and precomputed boxes), `crops` (face crops of videos and images for prediction) and `annotation`
(MSCCNet's SSIM-difference masks of real/fake frame pairs)."""
