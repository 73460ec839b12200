"""coinfer.runtime"""
