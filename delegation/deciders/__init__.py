"""deciders"""
