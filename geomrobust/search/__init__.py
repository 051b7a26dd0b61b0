"""geomrobust.search"""
