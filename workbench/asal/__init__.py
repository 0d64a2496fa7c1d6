"""ASAL: foundation-model scores and the target, open-endedness and illumination searches."""
