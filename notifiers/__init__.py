"""atalaia.notifiers"""
