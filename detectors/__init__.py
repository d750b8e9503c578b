"""atalaia.detectors"""
