"""atalaia.console"""
