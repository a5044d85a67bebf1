"""Datasets: put/get/rm, the replication engine, verify/repair/rebalance/gc, chunk refs."""
