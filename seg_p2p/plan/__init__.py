"""`seg-p2p plan`: what a study will cost before it runs (study.py), its stages (stages.py, estimate.py), how FLOPs
become hours (rates.py) and the words it is shown in (show.py)."""
