"""geomrobust.measures"""
