"""coinfer.graph"""
