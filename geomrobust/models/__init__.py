"""geomrobust.models"""
