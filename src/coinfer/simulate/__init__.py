"""coinfer.simulate"""
