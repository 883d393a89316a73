"""Simulated wearables on a virtual BLE radio, session physiology and scenarios.

Production code never imports this package; it plugs in through bleak's ``backend=`` seam.
"""
