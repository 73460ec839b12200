"""coinfer.plan"""
