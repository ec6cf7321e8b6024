"""MSCCNet: face manipulation detection and localization with multi-spectral class centers."""
