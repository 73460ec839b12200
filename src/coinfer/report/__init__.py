"""coinfer.report"""
