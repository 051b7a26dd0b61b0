"""geomrobust.train"""
