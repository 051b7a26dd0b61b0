"""geomrobust.plot"""
