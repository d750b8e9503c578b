"""atalaia.incidents"""
