"""geomrobust.report"""
