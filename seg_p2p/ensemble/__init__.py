"""Ensemble strategies: fixed combiners, frozen stacking (learned) and joint end-to-end training."""
