"""atalaia.rules"""
