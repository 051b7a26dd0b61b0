"""geomrobust.data"""
