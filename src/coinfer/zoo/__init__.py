"""coinfer.zoo"""
