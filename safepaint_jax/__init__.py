"""SafePaint: anti-forensic inpainting with region-wise separated attention."""
