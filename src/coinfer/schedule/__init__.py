"""coinfer.schedule"""
