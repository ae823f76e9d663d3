"""Ensemble strategies: the combiner kinds (fixed, frozen stacking, joint end-to-end) and how a strategy runs."""

from seg_p2p.ensemble import combiners, trained  # noqa: F401 - importing a kind's module registers it
