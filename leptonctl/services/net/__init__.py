"""The network: the measured graph, net probe, and routed copies (cp)."""
