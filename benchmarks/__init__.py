"""Speed benchmarks of seg_p2p against the reference way of training (see benchmarks/README.md)."""
