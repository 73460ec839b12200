"""coinfer.cluster"""
