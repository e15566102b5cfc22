"""Plate effect."""
