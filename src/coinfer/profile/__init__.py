"""coinfer.profile"""
